"""A session's progress (phase, iteration) and usage ledger, as kept in its lease.

Both change often (every phase, every LLM call) and so never cost a WAL commit:
they live in the heartbeat lease, travel with sync, and are written into the next
block and the exit block; at exit the ledger is stored in git (like an output) and
referenced from the exit block as `usage_ref`. The ledger has one entry per
(source, model): calls and tokens add up, so its size is bounded by the models and
sources a session uses, not by its calls. Everything read back is validated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..rules import valid_count, valid_text, valid_ts

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:
    from typing import Any

MAX_COUNT = 2**53  # integers that survive JSON everywhere
MAX_ENTRIES = 256
COUNTERS = ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cost_usd_micros")


@dataclass
class LedgerEntry:
    """Usage counters of one source and model."""

    source: str
    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd_micros: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost_usd"] = self.cost_usd_micros / 1_000_000
        return data


def decode_ledger(raw: Any) -> list[LedgerEntry]:
    """The valid entries of a ledger read from a lease or a stored blob (others dropped)."""
    entries: list[LedgerEntry] = []
    if not isinstance(raw, list):
        return entries
    for item in raw[:MAX_ENTRIES]:
        if not isinstance(item, dict):
            continue
        source, model = item.get("source"), item.get("model")
        if not (
            isinstance(source, str)
            and isinstance(model, str)
            and valid_text(source, 64)
            and valid_text(model, 128)
        ):
            continue
        counts = {k: item.get(k, 0) for k in COUNTERS}
        if all(valid_count(v) for v in counts.values()):
            entries.append(LedgerEntry(source, model, **counts))
    return entries


def stored_ledger(raw: bytes) -> list[dict[str, Any]] | None:
    """The valid entries of a ledger stored at exit (`{"session_id", "ledger"}`), as JSON;
    None when the blob is not such a document (it came from another clone: untrusted)."""
    import json

    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("ledger"), list):
        return None
    return [e.to_json() for e in decode_ledger(data["ledger"])]


def add_usage(ledger: list[LedgerEntry], entry: LedgerEntry) -> list[LedgerEntry]:
    """The ledger with `entry` added to its (source, model) line."""
    merged = [LedgerEntry(**asdict(e)) for e in ledger]
    for line in merged:
        if (line.source, line.model) == (entry.source, entry.model):
            for key in COUNTERS:
                setattr(line, key, min(MAX_COUNT, getattr(line, key) + getattr(entry, key)))
            return merged
    if len(merged) >= MAX_ENTRIES:
        raise ValueError(f"a session's ledger holds at most {MAX_ENTRIES} (source, model) lines")
    return [*merged, entry]


def totals(ledger: list[LedgerEntry]) -> dict[str, int]:
    """The ledger's sums, each capped at MAX_COUNT like its lines (a block holds no more)."""
    return {key: min(MAX_COUNT, sum(getattr(e, key) for e in ledger)) for key in COUNTERS}


def usage_json(t: dict[str, int]) -> dict[str, Any]:
    """Totals as shown in JSON: tokens, calls and the cost in USD."""
    return {
        "calls": t.get("calls", 0),
        "input_tokens": t.get("input_tokens", 0),
        "output_tokens": t.get("output_tokens", 0),
        "cache_read_tokens": t.get("cache_read_tokens", 0),
        "cost_usd": t.get("cost_usd_micros", 0) / 1_000_000,
    }


@dataclass
class Progress:
    """How far a session says it has come."""

    phase: str | None = None
    iteration: int | None = None
    iterations: int | None = None
    activity_ts: int | None = None

    @staticmethod
    def decode(raw: Any) -> Progress:
        if not isinstance(raw, dict):
            return Progress()
        phase, it, of, ts = (raw.get(k) for k in ("phase", "iteration", "iterations", "activity_ts"))
        return Progress(
            phase if valid_text(phase, 128) else None,
            it if valid_count(it) else None,
            of if valid_count(of) else None,
            ts if valid_ts(ts) else None,
        )
