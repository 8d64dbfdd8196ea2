"""The configuration database: model, YAML/INI loading, rules and the option merge.

Public API:
    load_database(path) -> ConfigDatabase          # raises ConfigError with every problem
    lint_database(path) / lint_text(text, source) -> LintResult (problems, warnings)
    effective_options(app, cluster) -> EffectiveOptions   # the list wins
    check_node_cluster(app, cluster, apps) -> list[str]   # ORS node start-up requirements
    parse_options_ini(text) -> Options; options_to_ini(options) -> str
    read_yaml_text(path) / load_yaml(text, source)  # YAML within size/depth/alias limits
    safe_load(text) / safe_dump(data)  # plain PyYAML safe load/dump, by libyaml if present

Options orsim understands, each defined once (``Option``): ``OPTIONS`` lists them,
``find(section, key)`` looks one up, and a constant per option (``CALL_WATCHING_TIMEOUT``,
``ROUTER_TIMEOUT``...) reads it: ``option.read(options)``, ``effective.value(option)``.
``option_rows()``/``options_markdown()`` render them for ``orsim config options``.
"""

from __future__ import annotations

from orsim.config._effective import EffectiveOptions as EffectiveOptions
from orsim.config._effective import OptionValue as OptionValue
from orsim.config._effective import Origin as Origin
from orsim.config._effective import check_node_cluster as check_node_cluster
from orsim.config._effective import cluster_members as cluster_members
from orsim.config._effective import effective_options as effective_options
from orsim.config._effective import storage_of as storage_of
from orsim.config._ini import options_to_ini as options_to_ini
from orsim.config._ini import parse_options_ini as parse_options_ini
from orsim.config._loader import LintResult as LintResult
from orsim.config._loader import lint_database as lint_database
from orsim.config._loader import lint_text as lint_text
from orsim.config._loader import load_database as load_database
from orsim.config._model import APP_TYPES as APP_TYPES
from orsim.config._model import TSERVER_TYPES as TSERVER_TYPES
from orsim.config._model import AppConnection as AppConnection
from orsim.config._model import Application as Application
from orsim.config._model import ConfigDatabase as ConfigDatabase
from orsim.config._model import Host as Host
from orsim.config._model import Options as Options
from orsim.config._model import Transaction as Transaction
from orsim.config._model import application_from_wire as application_from_wire
from orsim.config._model import application_to_wire as application_to_wire
from orsim.config._model import transaction_from_wire as transaction_from_wire
from orsim.config._model import transaction_to_wire as transaction_to_wire
from orsim.config._names import name_problem as name_problem
from orsim.config._names import safe_file_stem as safe_file_stem
from orsim.config._option import ANY_KEY as ANY_KEY
from orsim.config._option import BadValue as BadValue
from orsim.config._option import Choice as Choice
from orsim.config._option import Number as Number
from orsim.config._option import Option as Option
from orsim.config._option import Parser as Parser
from orsim.config._option import Text as Text
from orsim.config._option import WholeNumber as WholeNumber
from orsim.config._option import sections as sections
from orsim.config._option_rules import list_option_problem as list_option_problem
from orsim.config._option_rules import option_value_problem as option_value_problem
from orsim.config._option_rules import option_value_to_str as option_value_to_str
from orsim.config._option_rules import option_value_warning as option_value_warning
from orsim.config._option_table import option_rows as option_rows
from orsim.config._option_table import options_markdown as options_markdown
from orsim.config._options import ADDP_REMOTE_TIMEOUT as ADDP_REMOTE_TIMEOUT
from orsim.config._options import ADDP_TIMEOUT as ADDP_TIMEOUT
from orsim.config._options import ADDP_TRACE as ADDP_TRACE
from orsim.config._options import BACKUP_SYNCH_MAX_AGE as BACKUP_SYNCH_MAX_AGE
from orsim.config._options import BACKUP_SYNCH_MAX_BUFFER as BACKUP_SYNCH_MAX_BUFFER
from orsim.config._options import CALL_WATCHING_TIMEOUT as CALL_WATCHING_TIMEOUT
from orsim.config._options import CLUSTER as CLUSTER
from orsim.config._options import CONNECTION as CONNECTION
from orsim.config._options import CONNECTION_OPTIONS as CONNECTION_OPTIONS
from orsim.config._options import DEFAULT_DN as DEFAULT_DN
from orsim.config._options import DEFAULT_REDIRECTION_LIMIT as DEFAULT_REDIRECTION_LIMIT
from orsim.config._options import DEFAULT_URS_TARGETS as DEFAULT_URS_TARGETS
from orsim.config._options import LIST_OPTION_SECTIONS as LIST_OPTION_SECTIONS
from orsim.config._options import LOG_VERBOSE as LOG_VERBOSE
from orsim.config._options import OPTIONS as OPTIONS
from orsim.config._options import PEER_ADDP_TIMEOUT as PEER_ADDP_TIMEOUT
from orsim.config._options import PEER_HEARTBEAT as PEER_HEARTBEAT
from orsim.config._options import RECONNECT_TIMEOUT as RECONNECT_TIMEOUT
from orsim.config._options import ROUTER_TIMEOUT as ROUTER_TIMEOUT
from orsim.config._options import ROUTING_POINTS as ROUTING_POINTS
from orsim.config._options import STORE as STORE
from orsim.config._options import SYSTEM_ID as SYSTEM_ID
from orsim.config._options import URS_STRATEGIES as URS_STRATEGIES
from orsim.config._options import URS_STRATEGY as URS_STRATEGY
from orsim.config._options import URS_TARGETS as URS_TARGETS
from orsim.config._options import URS_THINK_TIME as URS_THINK_TIME
from orsim.config._options import find as find
from orsim.config._options import is_logging_section as is_logging_section
from orsim.config._options import takes_effect as takes_effect
from orsim.config._yaml_source import load_yaml as load_yaml
from orsim.config._yaml_source import read_yaml_text as read_yaml_text
from orsim.config._yaml_source import safe_dump as safe_dump
from orsim.config._yaml_source import safe_load as safe_load

__all__ = [
    "ADDP_REMOTE_TIMEOUT",
    "ADDP_TIMEOUT",
    "ADDP_TRACE",
    "ANY_KEY",
    "APP_TYPES",
    "BACKUP_SYNCH_MAX_AGE",
    "BACKUP_SYNCH_MAX_BUFFER",
    "CALL_WATCHING_TIMEOUT",
    "CLUSTER",
    "CONNECTION",
    "CONNECTION_OPTIONS",
    "DEFAULT_DN",
    "DEFAULT_REDIRECTION_LIMIT",
    "DEFAULT_URS_TARGETS",
    "LIST_OPTION_SECTIONS",
    "LOG_VERBOSE",
    "OPTIONS",
    "PEER_ADDP_TIMEOUT",
    "PEER_HEARTBEAT",
    "RECONNECT_TIMEOUT",
    "ROUTER_TIMEOUT",
    "ROUTING_POINTS",
    "STORE",
    "SYSTEM_ID",
    "TSERVER_TYPES",
    "URS_STRATEGIES",
    "URS_STRATEGY",
    "URS_TARGETS",
    "URS_THINK_TIME",
    "AppConnection",
    "Application",
    "BadValue",
    "Choice",
    "ConfigDatabase",
    "EffectiveOptions",
    "Host",
    "LintResult",
    "Number",
    "Option",
    "OptionValue",
    "Options",
    "Origin",
    "Parser",
    "Text",
    "Transaction",
    "WholeNumber",
    "application_from_wire",
    "application_to_wire",
    "check_node_cluster",
    "cluster_members",
    "effective_options",
    "find",
    "is_logging_section",
    "lint_database",
    "lint_text",
    "list_option_problem",
    "load_database",
    "load_yaml",
    "name_problem",
    "option_rows",
    "option_value_problem",
    "option_value_to_str",
    "option_value_warning",
    "options_markdown",
    "options_to_ini",
    "parse_options_ini",
    "read_yaml_text",
    "safe_dump",
    "safe_file_stem",
    "safe_load",
    "sections",
    "storage_of",
    "takes_effect",
    "transaction_from_wire",
    "transaction_to_wire",
]
