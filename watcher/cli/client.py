"""The operator commands: talk to the running daemon through its intake API.

`add`, `list`, `show`, `cancel`, `deliveries`, `redeliver`, `ping` and `reload` find the intake
address and token in the config file's `intake` section only, so an operator's shell needs
neither the API key nor the webhook secrets to use them. Human-readable tables by default,
`--json` for scripts; one clear line on error, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp

from watcher.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, default_config_path
from watcher.cli.follow import Seen, settled, wait_command
from watcher.cli.render import outcome_lines
from watcher.config.settings import IntakeConfig, load_intake_config
from watcher.errors import IntakeError

TASK_STATES = (
    "pending",
    "processing",
    "succeeded",
    "failed",
    "timed_out",
    "not_found",
    "cancelled",
)
# The public statuses (watcher.models.PublicDeliveryStatus): `retrying` is a pending delivery
# whose last attempt failed; `failed` is one that was given up.
DELIVERY_STATUSES = ("pending", "retrying", "succeeded", "failed")


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any


class IntakeClient:
    """A small client of the intake API, over TCP or a unix socket."""

    def __init__(self, intake: IntakeConfig, *, timeout_s: float = 30.0) -> None:
        self._intake = intake
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        if intake.unix_path is not None:
            self._base = "http://localhost"
            self.where = f"unix:{intake.unix_path}"
        else:
            host = intake.host or "127.0.0.1"
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            if ":" in host:
                host = f"[{host}]"
            self._base = f"http://{host}:{intake.port}"
            self.where = f"{host}:{intake.port}"

    def request(self, method: str, path: str, body: Any = None) -> Answer:
        return asyncio.run(self._request(method, path, body))

    async def fetch(self, method: str, path: str, body: Any = None) -> Answer:
        """`request` for a caller that runs its own event loop (e.g. `--wait`)."""
        return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: Any) -> Answer:
        headers = {"accept": "application/json"}
        if self._intake.token is not None:
            headers["authorization"] = f"Bearer {self._intake.token.reveal()}"
        connector: aiohttp.BaseConnector | None = None
        if self._intake.unix_path is not None:
            connector = aiohttp.UnixConnector(path=str(self._intake.unix_path))
        try:
            async with (
                aiohttp.ClientSession(connector=connector, timeout=self._timeout) as session,
                session.request(method, self._base + path, json=body, headers=headers) as resp,
            ):
                raw = await resp.read()
                try:
                    parsed: Any = json.loads(raw) if raw else None
                except ValueError:
                    parsed = raw.decode("utf-8", "replace")
                return Answer(resp.status, parsed)
        except (aiohttp.ClientConnectionError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise IntakeError(
                f"cannot reach the daemon at {self.where}: is it running? ({_reason(exc)})"
            ) from exc
        except TimeoutError as exc:
            raise IntakeError(f"the daemon at {self.where} did not answer in time") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def _error_text(answer: Answer) -> str:
    body = answer.body
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        err = body["error"]
        field = f" (field {err['field']})" if err.get("field") else ""
        return f"{err.get('message', 'error')}{field} [HTTP {answer.status}, {err.get('code')}]"
    return f"HTTP {answer.status}"


def _check(answer: Answer, *ok: int) -> Any:
    if answer.status not in ok:
        raise IntakeError(_error_text(answer), status=answer.status)
    return answer.body


def _client(args: argparse.Namespace) -> IntakeClient:
    path = Path(args.config or default_config_path())
    return IntakeClient(load_intake_config(path))


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def _s(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _meta_item(item: str) -> tuple[str, Any]:
    """argparse type of `--meta KEY=VALUE`: the value is kept as text, exactly as typed (a
    version `1.10` must not become the number 1.1). A malformed item is a usage error, exit 2."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"takes KEY=VALUE, got {item!r}")
    return key, raw


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _meta_json_item(item: str) -> tuple[str, Any]:
    """argparse type of `--meta-json KEY=JSON`: a typed value (number, true/false/null, list,
    object or quoted string). Anything that is not JSON is a usage error, exit 2."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"takes KEY=JSON, got {item!r}")
    try:
        return key, json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"the value of {key!r} is not JSON ({exc}); write text as --meta {key}=TEXT "
            f"or quote it: --meta-json '{key}=\"TEXT\"'"
        ) from None


def _limit(text: str) -> int:
    """argparse type of `--limit`: what the API accepts, 1 to 1000."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError("must be from 1 to 1000")
    return value


# -- commands -------------------------------------------------------------------------------------
def _positive_seconds(text: str) -> float:
    """argparse type of `--timeout`: seconds, more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _wait_for(
    args: argparse.Namespace,
    client: IntakeClient,
    task_id: str,
    shown: Mapping[str, Any] | None,
    header: str,
) -> int:
    """Follow a task until it is settled (`add --wait`, `show --follow`); `shown` is what was
    printed of it already."""
    path = "/v1/tasks/" + quote(task_id, safe="")

    async def fetch() -> Mapping[str, Any]:
        task: Mapping[str, Any] = _check(await client.fetch("GET", path), 200)
        return task

    return wait_command(
        fetch,
        task_id,
        seen=Seen.of(shown) if shown is not None else Seen(),
        as_json=args.json,
        timeout_s=args.timeout,
        header=header,
        print_outcome=shown is None or not settled(shown),
    )


def _timeout_misused(args: argparse.Namespace, flag: str) -> bool:
    """--timeout without --wait/--follow: a usage error (said here; the caller exits 2)."""
    if args.timeout is None or getattr(args, flag):
        return False
    print(
        f"apixo-watcher {args.command}: error: --timeout only applies with --{flag}",
        file=sys.stderr,
    )
    return True


def cmd_add(args: argparse.Namespace) -> int:
    if _timeout_misused(args, "wait"):
        return EXIT_USAGE
    body: dict[str, Any] = {"task_id": args.task_id, "model": args.model}
    if args.endpoint:
        body["endpoints"] = args.endpoint
    if args.meta:
        body["metadata"] = dict(args.meta)
    if args.callback_url:
        body["callback_url"] = args.callback_url
    if args.deadline:
        body["deadline"] = args.deadline
    client = _client(args)
    answer = client.request("POST", "/v1/tasks", body)
    task = _check(answer, 200, 201)
    verb = "registered" if answer.status == 201 else "already registered"
    if args.wait:
        header = f"{task['task_id']}: {verb} ({task['model']}); waiting until it is done"
        return _wait_for(args, client, task["task_id"], None, header)
    if args.json:
        _print_json(task)
    else:
        print(f"{task['task_id']}: {verb} ({task['model']}, {task['state']})")
    return EXIT_OK


_TASK_COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] = [
    ("task", lambda t: t["task_id"]),
    ("model", lambda t: t["model"]),
    ("state", lambda t: t["state"]),
    ("upstream", lambda t: t.get("upstream_state")),
    ("polls", lambda t: t.get("polls", 0)),
    ("registered", lambda t: t.get("registered_at")),
    ("finished", lambda t: t.get("finished_at")),
]
_DELIVERY_COLUMNS: list[tuple[str, Callable[[Mapping[str, Any]], Any]]] = [
    ("delivery", lambda d: d["delivery_id"]),
    ("task", lambda d: d["task_id"]),
    ("event", lambda d: d["event_type"]),
    ("endpoint", lambda d: d["endpoint"]),
    ("status", lambda d: d["status"]),
    ("attempts", lambda d: d["attempts"]),
    ("next attempt", lambda d: d.get("next_attempt_at")),
    ("last error", lambda d: d.get("last_error")),
]


DEFAULT_PAGE = 50  # rows a table shows unless --limit says otherwise
ALL_PAGE = 1000  # page size of --all: the most the API gives at once


def _pages(
    client: IntakeClient, path: str, query: dict[str, str], args: argparse.Namespace
) -> Iterator[Mapping[str, Any]]:
    """The pages of a listing from --cursor on: one page, or every page with --all."""
    page_size = args.limit or (ALL_PAGE if args.all else DEFAULT_PAGE)
    cursor = args.cursor
    while True:
        params = {"limit": str(page_size), **{k: v for k, v in query.items() if v}}
        if cursor:
            params["cursor"] = cursor
        body = _check(client.request("GET", f"{path}?{urlencode(params)}"), 200)
        yield body
        cursor = body.get("next_cursor")
        if not args.all or not cursor:
            return


def _listing(
    args: argparse.Namespace,
    path: str,
    query: dict[str, str],
    key: str,
    columns: list[tuple[str, Callable[[Mapping[str, Any]], Any]]],
) -> int:
    """GET a paged list and print it as a table (or the raw answer with --json); with --all,
    every page as it arrives."""
    pages = _pages(_client(args), path, query, args)
    if args.json and args.all:
        _stream_json(pages, key)
        return EXIT_OK
    if args.json:
        _print_json(next(pages))
        return EXIT_OK
    headers = [name for name, _ in columns]
    widths: list[int] | None = None
    next_cursor = None
    for body in pages:
        rows = [[_s(get(item)) for _, get in columns] for item in body[key]]
        if rows:
            widths = _print_rows(rows, headers, widths)
        next_cursor = body.get("next_cursor")
    if widths is None:
        print(f"no {key}")
    if next_cursor and not args.all:
        print(f"(more: --cursor {next_cursor} for the next page, or --all for every page)")
    return EXIT_OK


def _print_rows(rows: list[list[str]], headers: list[str], widths: list[int] | None) -> list[int]:
    """Print one page of a table (the header with the first); columns only ever widen, so
    streamed pages stay aligned as far as their values allow."""
    first = widths is None
    widths = widths or [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [[h.upper() for h in headers]] if first else []
    for line in lines + rows:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    sys.stdout.flush()
    return widths


def _stream_json(pages: Iterator[Mapping[str, Any]], key: str) -> None:
    """Every page as one JSON object of the API's own shape, `{key: [...every item...],
    "next_cursor": null}`, written item by item as pages arrive (valid JSON once complete)."""
    sys.stdout.write(f'{{"{key}": [')
    count = 0
    for body in pages:
        for item in body[key]:
            sys.stdout.write(("," if count else "") + "\n  " + json.dumps(item, ensure_ascii=False))
            count += 1
        sys.stdout.flush()
    sys.stdout.write(("\n" if count else "") + '], "next_cursor": null}\n')


def cmd_list(args: argparse.Namespace) -> int:
    return _listing(args, "/v1/tasks", {"state": args.state}, "tasks", _TASK_COLUMNS)


def cmd_show(args: argparse.Namespace) -> int:
    if _timeout_misused(args, "follow"):
        return EXIT_USAGE
    client = _client(args)
    path = "/v1/tasks/" + quote(args.task_id, safe="")
    task = _check(client.request("GET", path), 200)
    header = f"following {args.task_id} until it is done (Ctrl-C stops following, not watching)"
    if args.json and args.follow:
        return _wait_for(args, client, args.task_id, None, header)
    if args.json:
        _print_json(task)
        return EXIT_OK
    _print_task(task)
    if args.follow:
        return _wait_for(args, client, args.task_id, task, "\n" + header)
    return EXIT_OK


def _print_task(task: Mapping[str, Any]) -> None:
    print(f"task        {task['task_id']}")
    print(f"model       {task['model']}")
    print(f"state       {task['state']} (upstream: {_s(task.get('upstream_state'))})")
    print(f"registered  {_s(task.get('registered_at'))} from {_s(task.get('source'))}")
    print(f"finished    {_s(task.get('finished_at'))}")
    print(f"polls       {task.get('polls', 0)}, next poll {_s(task.get('next_poll_at'))}")
    window = task.get("expected_completion")
    if window:
        # From the model's learned durations: 8 in 10 tasks this old finish in this window.
        print(f"expected    between {_s(window.get('earliest'))} and {_s(window.get('latest'))}")
    print(f"last error  {_s(task.get('last_error'))}")
    print("\n".join(outcome_lines(task)))
    if task.get("metadata"):
        print(f"metadata    {json.dumps(task['metadata'], ensure_ascii=False)}")
    changes = task.get("state_changes") or []
    if changes:
        print("\nstate changes")
        rows = [
            [_s(c.get("at")), f"{c['from_state']} -> {c['to_state']}", _s(c.get("reason"))]
            for c in changes
        ]
        print(_table(rows, ["at", "change", "reason"]))
    events = task.get("events") or []
    if events:
        print("\nevents")
        rows = [[e["id"], e["type"], _s(e.get("created_at"))] for e in events]
        print(_table(rows, ["event", "type", "created"]))
    deliveries = task.get("deliveries") or []
    if deliveries:
        print("\ndeliveries")
        for d in deliveries:
            print(
                f"  {d['delivery_id']}  {d['event_type']} -> {d['endpoint']}  {d['status']}  "
                f"attempts {d['attempts']}  webhook-id {d['webhook_id']}"
            )
            for a in d.get("attempt_log") or []:
                result = _s(a.get("status_code")) if a.get("status_code") else _s(a.get("error"))
                print(
                    f"    #{a['number']} {_s(a.get('started_at'))} {a['outcome']} {result} "
                    f"({a.get('duration_ms', 0):.0f} ms)"
                )


def cmd_cancel(args: argparse.Namespace) -> int:
    path = "/v1/tasks/" + quote(args.task_id, safe="")
    task = _check(_client(args).request("DELETE", path), 200)
    if task.get("already_cancelled"):
        print(f"{task['task_id']}: already cancelled at {_s(task.get('finished_at'))} (unchanged)")
    else:
        print(f"{task['task_id']}: cancelled (no webhook will be sent)")
    return EXIT_OK


def cmd_deliveries(args: argparse.Namespace) -> int:
    query = {"status": args.status, "task_id": args.task}
    code = _listing(args, "/v1/deliveries", query, "deliveries", _DELIVERY_COLUMNS)
    if args.status == "failed" and not args.json:
        _note_retrying(args)
    return code


def _note_retrying(args: argparse.Namespace) -> None:
    """After `--status failed`: say so when deliveries are still retrying (their endpoint is
    failing now, but their schedule is not used up yet), so an empty list is not read as
    "all is well"."""
    query = {"status": "retrying", "limit": "1", **({"task_id": args.task} if args.task else {})}
    answer = _client(args).request("GET", f"/v1/deliveries?{urlencode(query)}")
    if answer.status == 200 and isinstance(answer.body, Mapping) and answer.body["deliveries"]:
        print(
            "note: some deliveries are retrying (their last attempt failed): "
            "apixo-watcher deliveries --status retrying"
        )


def cmd_redeliver(args: argparse.Namespace) -> int:
    path = f"/v1/deliveries/{quote(args.delivery_id, safe='')}/redeliver"
    body = _check(_client(args).request("POST", path), 202)
    print(f"{body['delivery_id']}: queued for redelivery (webhook-id {body['webhook_id']})")
    return EXIT_OK


def cmd_ping(args: argparse.Namespace) -> int:
    """Send a signed `webhook.test` event to one endpoint through the daemon; exit 0 on a 2xx
    answer, 1 otherwise."""
    path = Path(args.config or default_config_path())
    client = IntakeClient(load_intake_config(path), timeout_s=args.timeout)
    answer = client.request("POST", f"/v1/endpoints/{quote(args.endpoint, safe='')}/ping")
    result = _check(answer, 200)
    if args.json:
        _print_json(result)
    else:
        outcome = f"HTTP {result['status_code']}" if result["status_code"] else result["error"]
        print(f"{result['endpoint']}: {outcome} in {result['duration_ms']:.0f} ms")
        print(f"webhook-id {result['webhook_id']}, signed with {result['signatures']} secret(s)")
        if result["answer"]:
            more = " [cut]" if result["answer_truncated"] else ""
            print(f"answer: {_printable(result['answer'])}{more}")
    if result["ok"]:
        return EXIT_OK
    print(
        f"apixo-watcher: endpoint '{result['endpoint']}' did not accept the test event "
        f"({result['error']})",
        file=sys.stderr,
    )
    return EXIT_FAILURE


def _printable(text: str) -> str:
    """A receiver's answer, safe for a terminal: control characters (escape sequences) are
    shown as escapes, continuation lines indented."""
    shown = "".join(
        c if c.isprintable() or c in "\n\t" else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
    return shown.replace("\n", "\n        ")


def reload_command(args: argparse.Namespace) -> int:
    """`apixo-watcher reload`: synchronous, for systemd's ExecReload."""
    path = Path(args.config or default_config_path())
    client = IntakeClient(load_intake_config(path), timeout_s=args.timeout)
    answer = client.request("POST", "/v1/reload")
    if answer.status == 200:
        print("reloaded")
        return EXIT_OK
    body = answer.body if isinstance(answer.body, Mapping) else {}
    problems = body.get("problems") or []
    if answer.status == 422 and problems:
        print(
            "apixo-watcher: the new config is invalid; the daemon keeps the old one:",
            file=sys.stderr,
        )
        for p in problems:
            where = p.get("path") or "(document)"
            if p.get("line"):
                where += f" (line {p['line']})"
            print(f"  {where}: {p.get('message')}", file=sys.stderr)
        return EXIT_CONFIG
    raise IntakeError(_error_text(answer), status=answer.status)


def _add_timeout_option(p: argparse.ArgumentParser, flag: str) -> None:
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help=f"with {flag}: stop waiting after this long, exit 1 (the daemon keeps watching; "
        "default: no limit)",
    )


def _add_paging_options(p: argparse.ArgumentParser, key: str) -> None:
    p.add_argument(
        "--limit",
        type=_limit,
        default=None,
        help=f"{key} per page, 1-1000 (default: {DEFAULT_PAGE}; with --all: {ALL_PAGE})",
    )
    p.add_argument(
        "--cursor",
        metavar="CURSOR",
        help="start at this page: the next_cursor of an earlier page (a table that has more "
        "says it under the last row)",
    )
    p.add_argument(
        "--all",
        action="store_true",
        help="every page, printed as it arrives (with --json: one JSON object "
        f'{{"{key}": [...all...], "next_cursor": null}})',
    )
    p.add_argument("--json", action="store_true", help="print the API answer as JSON")


def register(
    sub: argparse._SubParsersAction[Any],
    add_config_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add the operator commands to the `apixo-watcher` parser."""
    p = sub.add_parser(
        "add",
        help="register a task to watch",
        description="Register a task through the daemon's intake API. Registering a known "
        "task again changes nothing.",
    )
    add_config_option(p)
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument("--model", required=True, help="the model the task was submitted to")
    p.add_argument(
        "--endpoint",
        action="append",
        metavar="NAME",
        help="send to this configured endpoint (repeatable; default: every endpoint)",
    )
    p.add_argument(
        "--meta",
        action="append",
        type=_meta_item,
        metavar="KEY=VALUE",
        help="metadata echoed in every webhook, the value as text (repeatable)",
    )
    p.add_argument(
        "--meta-json",
        action="append",
        dest="meta",
        type=_meta_json_item,
        metavar="KEY=JSON",
        help="metadata with a typed value: --meta-json order_id=42, --meta-json 'tags=[\"a\"]' "
        "(repeatable; a key given twice keeps the last value)",
    )
    p.add_argument("--callback-url", help="an ad-hoc webhook target (allowed hosts only)")
    p.add_argument("--deadline", help="give up after this long, e.g. 30m (default: per model)")
    p.add_argument("--json", action="store_true", help="print the task as JSON")
    p.add_argument(
        "--wait",
        action="store_true",
        help="then wait until the task is done and its webhooks are delivered (or failed for "
        "good), printing each change; exit 0 if it succeeded and every webhook was "
        "delivered, else 1 (Ctrl-C stops waiting, not watching: exit 130)",
    )
    _add_timeout_option(p, "--wait")
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("list", help="list tasks, newest first")
    add_config_option(p)
    p.add_argument("--state", choices=TASK_STATES, help="only tasks in this state")
    _add_paging_options(p, "tasks")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "show",
        help="one task: state, result, polls, events, delivery attempts",
        description="One task: its state; its result URLs, or the failure's code and message, "
        "or why watching stopped; the last error; polls, state changes, events and every "
        "delivery attempt.",
    )
    add_config_option(p)
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument("--json", action="store_true", help="print the API answer as JSON")
    p.add_argument(
        "--follow",
        action="store_true",
        help="then keep printing state changes and delivery attempts until the task is done "
        "and its webhooks are delivered (or failed for good); exit 0 if it succeeded and "
        "every webhook was delivered, else 1 (with --json: only the final task is printed)",
    )
    _add_timeout_option(p, "--follow")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("cancel", help="stop watching a task (no webhook is sent)")
    add_config_option(p)
    p.add_argument("task_id", metavar="TASK_ID")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser(
        "deliveries",
        help="the delivery log, newest first",
        description="The delivery log, newest first, with each delivery's next attempt and "
        "last error. Statuses: pending (waiting for its first attempt), retrying (its last "
        "attempt failed; the next one is due at NEXT ATTEMPT), succeeded, failed (given up: "
        "the retry schedule is used up, the endpoint answered 410, or it was removed; "
        "redeliver sends it again).",
    )
    add_config_option(p)
    p.add_argument(
        "--status",
        choices=DELIVERY_STATUSES,
        help="only deliveries in this status: " + ", ".join(DELIVERY_STATUSES),
    )
    p.add_argument("--task", metavar="TASK_ID", help="only deliveries of this task")
    _add_paging_options(p, "deliveries")
    p.set_defaults(func=cmd_deliveries)

    p = sub.add_parser(
        "ping",
        help="send a signed webhook.test event to one endpoint and show its answer",
        description="Ask the running daemon to send one signed `webhook.test` event to a "
        "configured endpoint now, and print the HTTP status, the latency and the start of the "
        "answer. It is signed exactly like real webhooks (the same headers, one signature per "
        "configured secret), so a receiver that accepts it accepts them; it is not stored or "
        "retried and does not appear in the delivery log. Exit 0 when the endpoint answered "
        "2xx, 1 otherwise.",
    )
    add_config_option(p)
    p.add_argument("endpoint", metavar="ENDPOINT", help="a configured endpoint's name")
    p.add_argument("--json", action="store_true", help="print the API answer as JSON")
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the daemon's answer (default: 60; the endpoint's own "
        "timeout applies to the request itself)",
    )
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser(
        "redeliver",
        help="send a delivery again (new attempt, same webhook-id)",
        description="Queue a delivery for a new attempt now, with the same webhook-id and a "
        "fresh retry schedule.",
    )
    add_config_option(p)
    p.add_argument("delivery_id", metavar="DELIVERY_ID")
    p.set_defaults(func=cmd_redeliver)
