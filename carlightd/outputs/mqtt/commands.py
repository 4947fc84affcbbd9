"""Commands on `ROOT/request/{command}` (DESIGN §5): parsing, and carrying them out. Which
commands there are, their request models and what each does: `carlightd.contract.commands`.

Anything malformed gets an error response naming the problem; nothing a request says can stop the
daemon. Parsing is pure (`parse_request`), so it can be fuzzed without a broker.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from carlightd import logs
from carlightd.config import describe
from carlightd.contract.commands import COMMANDS, Request
from carlightd.contract.payloads import ErrorResponse, OkResponse, Transaction
from carlightd.core.domain import UnknownFailureError
from carlightd.core.ports import Workshop
from carlightd.errors import CarlightdError, UnknownPartError

MAX_REQUEST_BYTES = 4096
MAX_TRANSACTION_CHARS = 128
MAX_SAFE_INTEGER = 2**53 - 1
# No request needs more than two levels; deeper JSON is refused before it is decoded, so no
# nesting (within the size limit) can reach the decoder's recursion limit.
MAX_NESTING = 16
# Error messages quote parts of the request; keep a response small whatever was sent.
MAX_ERROR_CHARS = 512
log = logs.get("carlightd.commands")

DISABLED = "commands are disabled on this daemon ([commands] enabled = false)"


class CommandError(CarlightdError):
    """A request that cannot be carried out; `transaction` is echoed when it could be read."""

    def __init__(self, message: str, transaction: Transaction = None) -> None:
        super().__init__(message)
        self.message = message
        self.transaction = transaction


def _transaction_of(body: dict[str, Any]) -> Transaction:
    value = body.get("transaction")
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        # Integers every JSON reader counts exactly (JavaScript's safe range).
        return value if abs(value) <= MAX_SAFE_INTEGER else None
    if isinstance(value, str) and len(value) <= MAX_TRANSACTION_CHARS and _encodable(value):
        return value
    return None


def _encodable(text: str) -> bool:
    """False for text that cannot be sent back as UTF-8 (lone surrogates from `\\ud800`)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """Text that is safe to send and log: unencodable characters escaped, length bounded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _nesting(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped), without
    decoding it."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


_DECODER = json.JSONDecoder()
_TRANSACTION_KEY = re.compile(r'[{,]\s*"transaction"\s*:\s*')


def _transaction_in_text(text: str) -> Transaction:
    """The top-level `transaction` of JSON text too deep to decode, found without decoding the
    rest, so that even that error can be matched to its request."""
    depth = 0
    in_string = escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        opens_top_object = char == "{" and depth == 0
        if opens_top_object or (char == "," and depth == 1):  # a top-level key may follow
            depth += opens_top_object
            match = _TRANSACTION_KEY.match(text, index)
            if match is not None:
                try:
                    value, _ = _DECODER.raw_decode(text, match.end())
                except (ValueError, RecursionError):
                    return None
                return _transaction_of({"transaction": value})
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON objects with a key given twice are refused: which one counts would be a guess."""
    body: dict[str, Any] = {}
    for key, value in pairs:
        if key in body:
            where = printable(key[:64])
            raise CommandError(f"payload is not JSON we accept: key {where!r} is given twice")
        body[key] = value
    return body


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (RFC 8259), though Python's decoder takes them."""
    raise CommandError(f"payload is not JSON: {name} is not a JSON value")


def read_body(payload: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or CommandError saying what is wrong with it."""
    if len(payload) > MAX_REQUEST_BYTES:
        raise CommandError(f"request is {len(payload)} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CommandError(f"payload is not UTF-8 text (byte {error.start})") from None
    if not text.strip():
        text = "{}"  # an empty body is an empty object: `clear_faults` needs nothing
    if (depth := _nesting(text)) > MAX_NESTING:
        raise CommandError(
            f"payload is nested {depth} levels deep; the limit is {MAX_NESTING}",
            _transaction_in_text(text),
        )
    try:
        body = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except CommandError as error:  # a duplicate key, NaN: still matched to its request
        raise CommandError(error.message, _transaction_in_text(text)) from None
    except (json.JSONDecodeError, RecursionError, ValueError) as error:
        # ValueError: a number beyond Python's integer digit limit, for instance.
        where = (
            f"{error.msg} (character {error.pos})"
            if isinstance(error, json.JSONDecodeError)
            else str(error)
        )
        raise CommandError(f"payload is not JSON: {where}", _transaction_in_text(text)) from None
    if not isinstance(body, dict):
        raise CommandError(f"payload must be a JSON object, not {_json_type(body)}")
    if (bad := _unencodable(body)) is not None:
        raise CommandError(
            f"{bad}: text with a lone surrogate (\\ud800-\\udfff escape) is not valid Unicode",
            _transaction_of(body),
        )
    return body


def _unencodable(value: object, path: str = "") -> str | None:
    """The path of the first key or string that cannot be encoded as UTF-8, if any."""
    if isinstance(value, str):
        return None if _encodable(value) else (path or "(top level)")
    items: list[tuple[object, object]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not _encodable(key):
                return f"{path}.(a key)" if path else "(a key)"
            items.append((key, item))
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, item in items:
        if (where := _unencodable(item, f"{path}.{key}" if path else str(key))) is not None:
            return where
    return None


def parse_request(command: str, payload: bytes) -> Request:
    """Turn raw bytes into a request, or raise CommandError saying precisely what is wrong.

    The body is read first, so that even an unknown command's error echoes its transaction.
    """
    body = read_body(payload)
    transaction = _transaction_of(body)
    if "transaction" in body and transaction is None and body["transaction"] is not None:
        raise CommandError(
            f"transaction: must be a string of at most {MAX_TRANSACTION_CHARS} characters "
            f"or an integer of at most {MAX_SAFE_INTEGER} in size"
        )
    if command not in COMMANDS:
        known = ", ".join(COMMANDS)
        raise CommandError(
            f"unknown command {printable(command[:64])!r}; known: {known}", transaction
        )
    model: type[Request] = COMMANDS[command].request
    try:
        return model.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(f"{path}: {message}" for path, message in describe(error))
        raise CommandError(printable(problems), transaction) from None


def _json_type(value: object) -> str:
    match value:
        case list():
            return "an array"
        case str():
            return "a string"
        case bool():
            return "a boolean"
        case int() | float():
            return "a number"
        case None:
            return "null"
    return type(value).__name__


class CommandHandler:
    """Answers each request: parsed here, carried out by its command's handler on `workshop`."""

    def __init__(self, workshop: Workshop, *, enabled: bool) -> None:
        self.workshop = workshop
        self.enabled = enabled

    async def handle(self, command: str, payload: bytes) -> OkResponse | ErrorResponse:
        """Never raises for anything a request can contain: a request that breaks something
        unexpected is logged with its traceback and answered with an error."""
        if not self.enabled:
            try:
                transaction = parse_request(command, payload).transaction
            except CommandError as error:
                transaction = error.transaction
            return ErrorResponse(error=DISABLED, transaction=transaction)
        request: Request | None = None
        try:
            request = parse_request(command, payload)
            data = await self._execute(command, request)
        except CommandError as error:
            return ErrorResponse(error=error.message, transaction=error.transaction)
        except Exception as error:  # a bug, not the requester's fault; the daemon carries on
            log.exception("command_failed", command=printable(command[:64]))
            return ErrorResponse(
                error=f"internal error: {printable(type(error).__name__)}",
                transaction=request.transaction if request is not None else None,
            )
        return OkResponse(data=data, transaction=request.transaction)

    async def _execute(self, command: str, request: Request) -> dict[str, Any]:
        try:
            return await COMMANDS[command].handler(self.workshop, request)
        except UnknownPartError as error:
            raise CommandError(f"component: {error.message}", request.transaction) from None
        except UnknownFailureError as error:
            raise CommandError(f"failure: {error}", request.transaction) from None
