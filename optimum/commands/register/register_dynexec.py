"""Registers `optimum-cli export dynexec` (PEP 420 namespace: no __init__.py under optimum/). Keep imports light."""

from optimum.commands.export.base import ExportCommand

from optimum_dynexec.commands.export_dynexec import DynexecExportCommand

REGISTER_COMMANDS = [(DynexecExportCommand, ExportCommand)]
