"""A readable, editable Markdown export of the memory bank, and its import.

Every item is one fenced ``yaml`` block (a person edits values in place; prose outside the
blocks is ignored on import)::

    ```yaml
    kind: insight
    dataset: beauty
    model: sasrec
    id: ins-1
    votes: 2
    text: lowering dropout from 0.5 to 0.2 improved ndcg@10 by 0.004 on beauty (sasrec)
    rule:
      condition: {mean_seq_len: [<, 20]}
      backbone: sasrec
      action: {param: dropout, direction: down}
    supporting: [study-a#1]
    ```

Kinds: ``insight_set`` (dataset x model header: profile), ``insight``, ``summary``. Import
replaces, for each dataset x model present in the file, the stored insight list by the file's
(so deleting a block deletes the insight), and replaces each summary present (its stored trials
for surrogate priors are kept). Everything is parsed and validated before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from virtualmle.memory.bank import MemoryBank
from virtualmle.memory.cognition import CognitionSummary
from virtualmle.memory.errors import MarkdownFormatError
from virtualmle.memory.insights import Insight, InsightSet
from virtualmle.memory.text import slugify

_FENCE_OPEN = re.compile(r"^```\s*(yaml|yml)\s*$")
_FENCE_CLOSE = re.compile(r"^```\s*$")

HEADER = """# VirtualMLE memory bank

Exported from `{root}`. Edit values inside the fenced yaml blocks (texts, votes, rules, start
configurations) and import with `virtualmle memory import FILE.md`. Deleting an insight block
deletes the insight. Keep `kind`, `dataset`, `model` and `id` as they are. Rule conditions are
`descriptor: [comparator, number]` (`<`, `<=`, `>`, `>=`, `==`, `!=`) or `descriptor: [in, [lo, hi]]`;
actions are `{{param: NAME, direction: up|down}}` or `{{param: NAME, value: V}}`, optionally `avoid: true`.
"""


class _Flow(list):
    """A list dumped in flow style (`[in, [1000, 100000]]`), so a rule clause stays on one line."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _yaml(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10**6,
                     default_flow_style=None)


def _block(doc: dict) -> str:
    return f"```yaml\n{_yaml(doc)}```\n"


def _rule_doc(rule: Any) -> dict | None:
    if rule is None:
        return None
    d = rule.model_dump(mode="json")
    d["condition"] = {k: _Flow(v) for k, v in d["condition"].items()}
    d["action"] = {k: v for k, v in d["action"].items() if v is not None and not (k == "avoid" and v is False)}
    return d


def _rule_doc_action(action: Any) -> dict:
    return {k: v for k, v in action.model_dump(mode="json").items()
            if v is not None and not (k == "avoid" and v is False)}


def export_markdown(bank: MemoryBank, *, dataset: str | None = None, model: str | None = None) -> str:
    """The bank (optionally one dataset / model) as Markdown, one YAML block per item."""
    out = [HEADER.format(root=bank.root)]
    want_ds = slugify(dataset) if dataset else None
    for iset in bank.insight_sets():
        if (want_ds and slugify(iset.dataset) != want_ds) or (model and iset.model.lower() != model.lower()):
            continue
        out.append(f"\n## Insights: {iset.dataset} x {iset.model}\n\n")
        out.append(_block({"kind": "insight_set", "dataset": iset.dataset, "model": iset.model,
                           "profile": iset.profile}))
        for ins in iset.ranked():
            d = {"kind": "insight", "dataset": iset.dataset, "model": iset.model, "id": ins.id,
                 "votes": ins.votes, "text": ins.text, "rule": _rule_doc(ins.rule),
                 "supporting": [str(r) for r in ins.supporting],
                 "contradicting": [str(r) for r in ins.contradicting],
                 "source": ins.source, "created": ins.created, "updated": ins.updated}
            if ins.combo:  # moves made together: the insight is about the combination
                d["combo"] = [_rule_doc_action(a) for a in ins.combo]
            out.append(f"\n### {ins.id} (votes {ins.votes}, confidence {ins.confidence:.2f})\n\n" + _block(d))
    for s in bank.summaries(model):
        if want_ds and slugify(s.dataset) != want_ds:
            continue
        d = s.model_dump(mode="json", exclude={"trials", "distance"})
        d["rules"] = [{"text": r.text, "rule": _rule_doc(r.rule), "confidence": round(r.confidence, 4),
                       "evidence": r.evidence, "effect": None if r.effect is None else round(r.effect, 6),
                       "source": r.source} for r in s.rules]
        out.append(f"\n## Cognition summary: {s.dataset} x {s.model} (study {s.study or '-'})\n\n"
                   + _block({"kind": "summary", **d}))
    return "".join(out)


def _blocks(text: str, name: str) -> list[tuple[int, dict]]:
    """(line number of the opening fence, parsed mapping) for every yaml block."""
    lines = text.splitlines()
    out: list[tuple[int, dict]] = []
    i = 0
    while i < len(lines):
        if _FENCE_OPEN.match(lines[i].strip()):
            start = i + 1  # 1-based line of the fence
            j = i + 1
            while j < len(lines) and not _FENCE_CLOSE.match(lines[j].strip()):
                j += 1
            if j == len(lines):
                raise MarkdownFormatError(f"{name}: line {start}: yaml block is never closed with ```")
            body = "\n".join(lines[i + 1 : j])
            try:
                doc = yaml.safe_load(body)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                ctx = getattr(exc, "context_mark", None)
                line = start + 1 + (mark.line if mark is not None else 0)
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                # An unclosed bracket is detected on a later line; also name where it opened.
                if ctx is not None and start + 1 + ctx.line != line:
                    problem += f"; it started at line {start + 1 + ctx.line}"
                raise MarkdownFormatError(f"{name}: line {line}: invalid YAML ({problem})") from exc
            if not isinstance(doc, dict):
                raise MarkdownFormatError(f"{name}: line {start}: a block must be a mapping with 'kind'")
            out.append((start, doc))
            i = j + 1
        else:
            i += 1
    return out


def _err(name: str, line: int, what: str, exc: ValidationError) -> MarkdownFormatError:
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e.get("loc", ()))
    return MarkdownFormatError(f"{name}: line {line}: {what}: {loc + ': ' if loc else ''}{e.get('msg')}")


def parse_markdown(text: str, name: str = "<markdown>") -> tuple[list[InsightSet], list[CognitionSummary]]:
    """Parse an export into insight sets and summaries; raises `MarkdownFormatError` naming the line."""
    sets: dict[tuple[str, str], InsightSet] = {}
    summaries: list[CognitionSummary] = []
    seen_ids: dict[tuple[str, str, str], int] = {}
    for line, doc in _blocks(text, name):
        kind = doc.get("kind")
        ds, model = doc.get("dataset"), doc.get("model")
        if kind not in ("insight_set", "insight", "summary"):
            raise MarkdownFormatError(f"{name}: line {line}: unknown kind {kind!r} (insight_set, insight, summary)")
        if not isinstance(ds, str) or not isinstance(model, str) or not ds or not model:
            raise MarkdownFormatError(f"{name}: line {line}: {kind} needs 'dataset' and 'model'")
        try:
            key = (slugify(ds), slugify(model))
        except Exception as exc:
            raise MarkdownFormatError(f"{name}: line {line}: {exc}") from exc
        body = {k: v for k, v in doc.items() if k not in ("kind", "dataset", "model")}
        if kind == "summary":
            try:
                summaries.append(CognitionSummary.model_validate({"dataset": ds, "model": model, **body}))
            except ValidationError as exc:
                raise _err(name, line, f"summary {ds} x {model}", exc) from exc
            continue
        iset = sets.setdefault(key, InsightSet(dataset=ds, model=model))
        if kind == "insight_set":
            profile = body.get("profile") or {}
            if not isinstance(profile, dict):
                raise MarkdownFormatError(f"{name}: line {line}: insight_set profile must be a mapping")
            iset.profile = profile
            continue
        try:
            ins = Insight.model_validate(body)
        except ValidationError as exc:
            raise _err(name, line, f"insight {body.get('id', '?')}", exc) from exc
        dup = seen_ids.get((*key, ins.id))
        if dup is not None:
            raise MarkdownFormatError(f"{name}: line {line}: insight id {ins.id} already used at line {dup}")
        seen_ids[(*key, ins.id)] = line
        iset.insights.append(ins)
    return list(sets.values()), summaries


def import_markdown(bank: MemoryBank, path: str | Path) -> tuple[int, int]:
    """Parse `path` and write it into the bank; returns (insights, summaries) imported.

    Parsing and validation come first: a malformed file raises `MarkdownFormatError` and the
    bank is left untouched.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MarkdownFormatError(f"{path}: cannot read ({exc.strerror})") from exc
    sets, summaries = parse_markdown(text, str(path))
    with bank.locked():
        for iset in sets:
            old = bank.insights(iset.dataset, iset.model)
            if not iset.profile:
                iset.profile = old.profile
            top = max((int(i.id.split("-")[1]) for i in iset.insights), default=0)
            iset.next_id = max(old.next_id, top + 1)  # never reuse an id that evidence may point to
        staged = []
        for s in summaries:
            sp = bank.summary_path(s.dataset, s.model, s.study)
            if sp.exists():  # keep the stored trials (the export leaves them out)
                s.trials = next((o.trials for o in bank.summaries(s.model)
                                 if bank.summary_path(o.dataset, o.model, o.study) == sp), [])
            staged.append((sp, s))
        for iset in sets:
            bank._write_insights(iset)
        for _, s in staged:
            bank._write_summary(s)
    return sum(len(i.insights) for i in sets), len(summaries)
