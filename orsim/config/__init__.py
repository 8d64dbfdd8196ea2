"""The configuration database: model, YAML/INI loading, rules and the option merge.

Public API:
    load_database(path) -> ConfigDatabase          # raises ConfigError with every problem
    lint_database(path) / lint_text(text, source) -> LintResult (problems, warnings)
    effective_options(app, cluster) -> EffectiveOptions   # the list wins
    check_node_cluster(app, cluster, apps) -> list[str]   # ORS node start-up requirements
    parse_options_ini(text) -> Options; options_to_ini(options) -> str
    read_yaml_text(path) / load_yaml(text, source)  # YAML within size/depth/alias limits
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
from orsim.config._model import LIST_OPTION_SECTIONS as LIST_OPTION_SECTIONS
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
from orsim.config._option_rules import is_logging_section as is_logging_section
from orsim.config._option_rules import list_option_problem as list_option_problem
from orsim.config._option_rules import option_value_problem as option_value_problem
from orsim.config._option_rules import option_value_to_str as option_value_to_str
from orsim.config._yaml_source import load_yaml as load_yaml
from orsim.config._yaml_source import read_yaml_text as read_yaml_text

__all__ = [
    "APP_TYPES",
    "LIST_OPTION_SECTIONS",
    "TSERVER_TYPES",
    "AppConnection",
    "Application",
    "ConfigDatabase",
    "EffectiveOptions",
    "Host",
    "LintResult",
    "OptionValue",
    "Options",
    "Origin",
    "Transaction",
    "application_from_wire",
    "application_to_wire",
    "check_node_cluster",
    "cluster_members",
    "effective_options",
    "is_logging_section",
    "lint_database",
    "lint_text",
    "list_option_problem",
    "load_database",
    "load_yaml",
    "name_problem",
    "option_value_problem",
    "option_value_to_str",
    "options_to_ini",
    "parse_options_ini",
    "read_yaml_text",
    "safe_file_stem",
    "storage_of",
    "transaction_from_wire",
    "transaction_to_wire",
]
