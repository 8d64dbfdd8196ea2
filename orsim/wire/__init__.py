"""The orsim wire protocol: framing, messages, handshake, ADDP and the transport seam."""

from __future__ import annotations

from orsim.errors import RequestRefused as RequestRefused
from orsim.wire._addp import ADDP_TRACE_VALUES as ADDP_TRACE_VALUES
from orsim.wire._addp import Addp as Addp
from orsim.wire._addp import AddpAction as AddpAction
from orsim.wire._cluster_key import KEY_FILE as KEY_FILE
from orsim.wire._cluster_key import create_cluster_key as create_cluster_key
from orsim.wire._cluster_key import read_cluster_key as read_cluster_key
from orsim.wire._codec import DEFAULT_MAX_FRAME as DEFAULT_MAX_FRAME
from orsim.wire._codec import NEED_DATA as NEED_DATA
from orsim.wire._codec import FrameDecoder as FrameDecoder
from orsim.wire._codec import decode_body as decode_body
from orsim.wire._codec import encode as encode
from orsim.wire._connection import Connection as Connection
from orsim.wire._connection import FrameTotals as FrameTotals
from orsim.wire._connection import PushHandler as PushHandler
from orsim.wire._connection import RequestHandler as RequestHandler
from orsim.wire._connection import frame_counts as frame_counts
from orsim.wire._connection import frame_totals as frame_totals
from orsim.wire._endpoint import READ_ONLY as READ_ONLY
from orsim.wire._endpoint import connect_with_retry as connect_with_retry
from orsim.wire._endpoint import connected as connected
from orsim.wire._endpoint import key_of as key_of
from orsim.wire._endpoint import open_connection as open_connection
from orsim.wire._endpoint import serve_app as serve_app
from orsim.wire._messages import PROTOCOL_VERSION as PROTOCOL_VERSION
from orsim.wire._messages import ErrorResponse as ErrorResponse
from orsim.wire._messages import Hello as Hello
from orsim.wire._messages import Json as Json
from orsim.wire._messages import Message as Message
from orsim.wire._messages import Ping as Ping
from orsim.wire._messages import Pong as Pong
from orsim.wire._messages import Push as Push
from orsim.wire._messages import Request as Request
from orsim.wire._messages import Response as Response
from orsim.wire._messages import Welcome as Welcome
from orsim.wire._params import param as param
from orsim.wire._params import str_list as str_list
from orsim.wire._session import Accepted as Accepted
from orsim.wire._session import ClientHandshake as ClientHandshake
from orsim.wire._session import Incoming as Incoming
from orsim.wire._session import Refused as Refused
from orsim.wire._session import ServerHandshake as ServerHandshake
from orsim.wire._session import Session as Session
from orsim.wire._transport import CLUSTER_KEY_ENV as CLUSTER_KEY_ENV
from orsim.wire._transport import MemoryNetwork as MemoryNetwork
from orsim.wire._transport import MemoryNetworkView as MemoryNetworkView
from orsim.wire._transport import Network as Network
from orsim.wire._transport import TcpNetwork as TcpNetwork
from orsim.wire._transport import serve_listener as serve_listener
from orsim.wire._typed import FLATTEN as FLATTEN
from orsim.wire._typed import OMIT_NONE as OMIT_NONE
from orsim.wire._typed import AppStatus as AppStatus
from orsim.wire._typed import Call as Call
from orsim.wire._typed import Done as Done
from orsim.wire._typed import FieldReader as FieldReader
from orsim.wire._typed import FieldWriter as FieldWriter
from orsim.wire._typed import HandlerTable as HandlerTable
from orsim.wire._typed import Notice as Notice
from orsim.wire._typed import PushBatch as PushBatch
from orsim.wire._typed import PushTable as PushTable
from orsim.wire._typed import Record as Record
from orsim.wire._typed import Status as Status
from orsim.wire._typed import StatusReport as StatusReport
from orsim.wire._typed import codec as codec
from orsim.wire._typed import int_or_none as int_or_none
from orsim.wire._typed import json_object as json_object
from orsim.wire._typed import nonempty_text as nonempty_text
from orsim.wire._typed import number_or_none as number_or_none
from orsim.wire._typed import on as on
from orsim.wire._typed import when as when
from orsim.wire._typed import when_many as when_many
from orsim.wire._typed import whole_number as whole_number

__all__ = [
    "ADDP_TRACE_VALUES",
    "CLUSTER_KEY_ENV",
    "DEFAULT_MAX_FRAME",
    "FLATTEN",
    "KEY_FILE",
    "NEED_DATA",
    "OMIT_NONE",
    "PROTOCOL_VERSION",
    "READ_ONLY",
    "Accepted",
    "Addp",
    "AddpAction",
    "AppStatus",
    "Call",
    "ClientHandshake",
    "Connection",
    "Done",
    "ErrorResponse",
    "FieldReader",
    "FieldWriter",
    "FrameDecoder",
    "FrameTotals",
    "HandlerTable",
    "Hello",
    "Incoming",
    "Json",
    "MemoryNetwork",
    "MemoryNetworkView",
    "Message",
    "Network",
    "Notice",
    "Ping",
    "Pong",
    "Push",
    "PushBatch",
    "PushHandler",
    "PushTable",
    "Record",
    "Refused",
    "Request",
    "RequestHandler",
    "RequestRefused",
    "Response",
    "ServerHandshake",
    "Session",
    "Status",
    "StatusReport",
    "TcpNetwork",
    "Welcome",
    "codec",
    "connect_with_retry",
    "connected",
    "create_cluster_key",
    "decode_body",
    "encode",
    "frame_counts",
    "frame_totals",
    "int_or_none",
    "json_object",
    "key_of",
    "nonempty_text",
    "number_or_none",
    "on",
    "open_connection",
    "param",
    "read_cluster_key",
    "serve_app",
    "serve_listener",
    "str_list",
    "when",
    "when_many",
    "whole_number",
]
