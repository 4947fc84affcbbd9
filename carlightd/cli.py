"""The command line.

Daemon: `run`, `demo`. Configuration: `check-config`, `schema`. Client commands that talk to a
running daemon over MQTT: `inject`, `repair`, `clear`, `ignition`, `faults`, `watch`.
Exit codes: 0 clean stop or success, 2 bad configuration or usage, 1 anything else (including an
error response from the daemon, or no daemon answering).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from carlightd import __version__, config, logs
from carlightd.contract.commands import COMMANDS, Command, Option

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carlightd",
        description="Onboard diagnostics for a simulated car's electrical system, over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"carlightd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.add_argument(
            "--config",
            type=Path,
            help=f"TOML file (default: ${config.CONFIG_PATH_ENV}, else the packaged default car)",
        )
        return sub

    for name, help_ in (
        ("run", "run the daemon in the foreground"),
        ("demo", "run the daemon with a car that breaks and mends parts on a script"),
    ):
        sub = add(name, help_)
        sub.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
        sub.add_argument(
            "--log-format",
            choices=["auto", "json", "console"],
            default="auto",
            help="auto: console on a terminal, JSON lines otherwise",
        )
    add("check-config", "validate a configuration; exit 0 or 2")
    add("health", "is the daemon cycling? exit 0 if its heartbeat is fresh, else 1")
    schema = commands.add_parser(
        "schema", help="JSON Schemas of the configuration and of every MQTT payload"
    )
    schema.add_argument(
        "--write", type=Path, metavar="DIR", help="write one file per schema into DIR"
    )
    for command in COMMANDS.values():  # inject, repair, clear, ignition
        sub = add(command.cli.subcommand, command.cli.help)
        for argument in command.arguments:
            sub.add_argument(argument.metavar, choices=command.choices(argument) or None)
        for option in command.options:
            sub.add_argument(
                option.flag,
                dest=option.field,
                metavar=option.metavar,
                help=option.help,
                type=_checked(option),
            )
    faults = add("faults", "print the current faults")
    faults.add_argument("--json", action="store_true", help="the retained payload as it is")
    add("watch", "a live table of parts and faults (plain lines when not on a terminal)")
    fleet = add("fleet", "run many simulated cars at once, to load-test a broker")
    fleet.add_argument("--vehicles", type=int, required=True, help="how many cars")
    fleet.add_argument("--processes", type=int, default=1, help="shard the cars over processes")
    fleet.add_argument(
        "--fault-rate", type=float, default=0.1, help="parts broken per second, fleet-wide"
    )
    fleet.add_argument("--seconds", type=float, help="stop after this long (default: Ctrl-C)")
    dashboard = add("dashboard", "serve the live instrument-cluster web page")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dashboard.add_argument("--port", type=int, default=8080, help="port (0: any free one)")
    return parser


def _load(path: Path | None) -> config.Settings | None:
    try:
        return config.load(path)
    except config.ConfigError as error:
        print(f"carlightd: {error}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "schema":
        from carlightd import schemas  # noqa: PLC0415

        if args.write is not None:
            for path in schemas.write(args.write):
                print(path)
        else:
            print(json.dumps(schemas.all_schemas(), indent=2))
        return EXIT_OK
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    if args.command == "check-config":
        source = config.resolve_path(args.config)
        count = len(settings.components)
        print(f"{source}: OK ({count} components, vehicle {settings.vehicle.id})")
        return EXIT_OK
    if args.command == "health":
        from carlightd.app import health  # noqa: PLC0415

        try:
            print(health.check(settings.diagnostics.state_dir))
        except health.Unhealthy as problem:
            print(f"carlightd: unhealthy: {problem}", file=sys.stderr)
            return EXIT_FAILURE
        return EXIT_OK
    if args.command in ("run", "demo"):
        return _daemon(args, settings)
    if args.command == "fleet":
        from carlightd.tools import fleet  # noqa: PLC0415

        if args.vehicles < 1 or args.processes < 1:
            print("carlightd: --vehicles and --processes must be at least 1", file=sys.stderr)
            return EXIT_CONFIG
        logs.configure(level="WARNING")  # hundreds of cars: only what needs attention
        try:
            stats = fleet.run_fleet(
                settings,
                args.vehicles,
                args.processes,
                config_path=config.resolve_path(args.config),
                seconds=args.seconds,
                fault_rate=args.fault_rate,
            )
        except KeyboardInterrupt:
            return EXIT_OK
        print(json.dumps(stats.as_dict()))
        return EXIT_OK
    if args.command == "dashboard":
        from carlightd.consumers.dashboard import server  # noqa: PLC0415

        logs.configure()
        try:
            asyncio.run(server.run(settings, args.host, args.port))
        except OSError as error:  # the port is taken, or the address is not ours
            print(f"carlightd: cannot serve on {args.host}:{args.port}: {error}", file=sys.stderr)
            return EXIT_FAILURE
        except KeyboardInterrupt:
            pass
        return EXIT_OK
    return _client_command(args, settings)


def _daemon(args: argparse.Namespace, settings: config.Settings) -> int:
    json_logs = {"auto": None, "json": True, "console": False}[args.log_format]
    logs.configure(json=json_logs, level=args.log_level)
    # Imported here so that check-config and the client commands stay light.
    from carlightd.app import daemon  # noqa: PLC0415
    from carlightd.store.statelock import StateDirectoryInUseError  # noqa: PLC0415
    from carlightd.tools import demo  # noqa: PLC0415
    from carlightd.tools.embedded_broker import (  # noqa: PLC0415
        EmbeddedBrokerUnavailableError,
    )

    try:
        if args.command == "demo":
            asyncio.run(demo.demo(settings, sys.stdout))
        else:
            asyncio.run(daemon.run(settings, config.resolve_path(args.config)))
    except KeyboardInterrupt:
        return EXIT_OK
    except EmbeddedBrokerUnavailableError as error:
        print(f"carlightd: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except StateDirectoryInUseError as error:  # another daemon runs this car: not restarted
        print(f"carlightd: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception:
        logs.get("carlightd").exception("crashed")
        return EXIT_FAILURE
    return EXIT_OK


def _checked(option: Option) -> Callable[[str], Any]:
    """The option's parser, its ValueError shown by argparse as the message it is."""

    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


# The client subcommands that send a request: `carlightd inject` sends `inject_fault`.
_COMMAND_OF: dict[str, Command[Any]] = {c.cli.subcommand: c for c in COMMANDS.values()}


def _client_command(args: argparse.Namespace, settings: config.Settings) -> int:
    from carlightd.consumers import client  # noqa: PLC0415

    try:
        if (command := _COMMAND_OF.get(args.command)) is not None:
            body = {
                argument.field: getattr(args, argument.metavar) for argument in command.arguments
            }
            for option in command.options:  # left out: the request leaves it out too
                if (value := getattr(args, option.field)) is not None:
                    body[option.field] = value
            response = asyncio.run(client.send_command(settings, command.name, body))
            if response.status == "error":
                print(f"carlightd: {command.name} refused: {response.error}", file=sys.stderr)
                return EXIT_FAILURE
            print(f"{command.name}: ok {json.dumps(response.data)}")
            return EXIT_OK
        if args.command == "faults":
            faults, availability = asyncio.run(client.current_faults(settings))
            if faults is None:
                print(
                    f"carlightd: nothing published for vehicle {settings.vehicle.id!r} under "
                    f"{settings.mqtt.base_topic}/ (has the daemon ever run here?)",
                    file=sys.stderr,
                )
                return EXIT_FAILURE
            if args.json:
                print(client.faults_json(faults))
            else:
                print(client.format_faults(faults, availability))
            return EXIT_OK
        if sys.stdout.isatty():
            from rich.console import Console  # noqa: PLC0415

            asyncio.run(client.watch_live(settings, Console()))
        else:  # piped or logged: plain lines
            asyncio.run(client.watch(settings, sys.stdout))
    except client.ClientError as error:
        print(f"carlightd: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
