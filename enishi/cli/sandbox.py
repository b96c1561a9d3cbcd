"""`enishi sandbox ledger|fail|faults|clear|reply`: look at and steer the provider sandbox.

Talks to the sandbox's admin API (`/sandbox/...`) at `--url` (or `ENISHI_SANDBOX_URL`;
default the local stack's sandbox). The sandbox itself runs as a service (`python -m
services.sandbox`, started by `enishi dev up`). A developer tool: it shows addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.table import Table

from enishi.devstack.parts import LOOPBACK, local_port

URL_ENV: Final = "ENISHI_SANDBOX_URL"
TIMEOUT_SECONDS: Final = 10.0

app = typer.Typer(help="The provider sandbox: deliveries and faults.", no_args_is_help=True)
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

UrlOption = Annotated[
    str | None, typer.Option("--url", help=f"Sandbox HTTP base URL (default ${URL_ENV}).")
]


def base_url(url: str | None = None) -> str:
    """`--url`, else `ENISHI_SANDBOX_URL`, else the local stack's sandbox."""
    local = f"http://{LOOPBACK}:{local_port('sandbox', 'sandbox_http_port')}"
    return (url or os.environ.get(URL_ENV) or local).rstrip("/")


def call(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One admin API call; exits 1 with a readable message when it fails."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("message", detail)
        err.print(f"[red]error:[/red] {exc.code}: {detail}")
    except (urllib.error.URLError, OSError) as exc:
        err.print(
            f"[red]error:[/red] the sandbox at {url} is unreachable ({exc}). "
            f"Is the stack up (`enishi dev up`)? Point elsewhere with --url or {URL_ENV}."
        )
    raise typer.Exit(1)


def ledger_table(entries: list[dict[str, Any]]) -> Table:
    """The ledger as a table: one row per request the sandbox accepted."""
    table = Table(title=f"sandbox ledger ({len(entries)})")
    for column in ("at", "provider", "to", "what", "key", "duplicate"):
        table.add_column(column)
    for entry in entries:
        request = entry.get("request") or {}
        if entry["provider"] == "smtp":
            what = request.get("subject", "")
        elif entry["provider"] == "line":
            messages = request.get("messages") or [{}]
            what = str(messages[0].get("text", messages[0].get("type", "")))
        elif entry["provider"] == "sms":
            what = str(request.get("body", ""))
        else:
            what = str((request.get("notification") or {}).get("title", ""))
        table.add_row(
            entry["at"][:23],
            entry["provider"],
            entry["to"],
            what[:40],
            str(entry.get("idempotency_key", ""))[:36],
            "yes" if entry.get("duplicate") else "",
        )
    return table


@app.command()
def ledger(
    provider: Annotated[str, typer.Option(help="smtp, line, sms or fcm; empty: all.")] = "",
    to: Annotated[str, typer.Option(help="Only deliveries to this address.")] = "",
    limit: Annotated[int, typer.Option(help="Newest this many; 0: all.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    url: UrlOption = None,
) -> None:
    """Show what the sandbox delivered (newest last)."""
    query = urllib.parse.urlencode({"provider": provider, "to": to, "limit": limit})
    entries = call(base_url(url), "GET", f"/sandbox/ledger?{query}")["entries"]
    if as_json:
        for entry in entries:
            out.print_json(json.dumps(entry, ensure_ascii=False))
        return
    out.print(ledger_table(entries))


@app.command()
def fail(
    provider: Annotated[str, typer.Argument(help="smtp, line, sms, fcm or '*'.")],
    status: Annotated[
        int, typer.Option(help="Error status (HTTP, or an SMTP reply code like 451, 550).")
    ] = 503,
    times: Annotated[int, typer.Option(help="How many requests it hits; 0: forever.")] = 1,
    rate: Annotated[float, typer.Option(help="Fraction of matching requests hit (0-1).")] = 1.0,
    retry_after: Annotated[
        float | None, typer.Option(help="Retry-After seconds sent with the error.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Hang this many seconds, then 504 (instead of status).")
    ] = None,
    delay: Annotated[
        float | None, typer.Option(help="Add this much latency, then deliver.")
    ] = None,
    lost_reply: Annotated[
        float | None, typer.Option(help="Deliver, then hang this long before answering.")
    ] = None,
    unreachable: Annotated[
        bool,
        typer.Option(
            "--unreachable",
            help="The address is dead: SMTP 550 5.1.1 at RCPT TO, FCM UNREGISTERED, "
            "SMS invalid_number (with --to; --times 0 keeps it dead).",
        ),
    ] = False,
    to: Annotated[str, typer.Option(help="Only requests to this address.")] = "",
    url: UrlOption = None,
) -> None:
    """Make the sandbox fail requests: `enishi sandbox fail line --status 503 --times 2`."""
    body: dict[str, Any] = {"provider": provider, "status": status, "times": times, "rate": rate}
    body["to"] = to
    if retry_after is not None:
        body["retry_after"] = retry_after
    chosen = [
        (k, v)
        for k, v in (("timeout", timeout), ("delay", delay), ("lost_reply", lost_reply))
        if v is not None
    ]
    if len(chosen) + unreachable > 1:
        err.print(
            "[red]error:[/red] --timeout, --delay, --lost-reply and --unreachable "
            "exclude each other"
        )
        raise typer.Exit(2)
    if chosen:
        body["kind"], body["seconds"] = chosen[0]
    if unreachable:
        body["kind"] = "unreachable"
    fault = call(base_url(url), "POST", "/sandbox/faults", body)
    out.print(f"fault {fault['id']}: {fault['provider']} {fault['kind']} x{fault['times'] or '∞'}")


@app.command()
def faults(url: UrlOption = None) -> None:
    """List the configured faults and how often each hit."""
    rules = call(base_url(url), "GET", "/sandbox/faults")["faults"]
    table = Table(title=f"sandbox faults ({len(rules)})")
    for column in ("id", "provider", "kind", "status", "times", "hits", "rate", "to"):
        table.add_column(column)
    for rule in rules:
        table.add_row(
            rule["id"],
            rule["provider"],
            rule["kind"],
            str(rule["status"]),
            str(rule["times"] or "∞"),
            str(rule["hits"]),
            f"{rule['rate']:g}",
            rule["to"],
        )
    out.print(table)


@app.command()
def clear(
    ledger: Annotated[bool, typer.Option("--ledger", help="Also forget the ledger.")] = False,
    url: UrlOption = None,
) -> None:
    """Remove every fault (and, with --ledger, every ledger entry)."""
    target = base_url(url)
    call(target, "DELETE", "/sandbox/faults")
    if ledger:
        call(target, "DELETE", "/sandbox/ledger")
    out.print("cleared")


@app.command()
def reply(
    line_user_id: Annotated[str, typer.Argument(help="The LINE user id (U + 32 hex digits).")],
    text: Annotated[str, typer.Argument(help="What the customer writes.")] = "",
    event: Annotated[str, typer.Option(help="message, follow or unfollow.")] = "message",
    url: UrlOption = None,
) -> None:
    """Send a LINE webhook event as the customer (a reply, a follow or an unfollow)."""
    result = call(
        base_url(url),
        "POST",
        "/sandbox/inbound/line",
        {"user_id": line_user_id, "type": event, "text": text},
    )
    out.print(f"LINE webhook answered {result['webhook_status']}")


@app.command()
def unsubscribe(
    dispatch_id: Annotated[str, typer.Argument(help="The dispatch id of a delivered email.")],
    url: UrlOption = None,
) -> None:
    """Click an email's one-click unsubscribe, as a mailbox provider does (RFC 8058 POST)."""
    result = call(
        base_url(url),
        "POST",
        "/sandbox/inbound/email",
        {"type": "unsubscribe", "dispatch_id": dispatch_id},
    )
    out.print(f"unsubscribe link answered {result['unsubscribe_status']}")
