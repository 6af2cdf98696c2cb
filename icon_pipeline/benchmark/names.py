"""The `names` query set: does typing an icon's name, or a common word for it, find that very icon first?

- every icon name of the library, as a designer types it ("shopping cart", style words dropped);
- its synonyms: the human tags that the external benchmark's sets (Phosphor, Font Awesome; see
  external.py) gave their icon of the same name, when the tag is unambiguous: every set icon it is
  written for names this one library name, and it is not itself a library icon's name (that name's
  own query owns it).

R@K counts the icon of that exact name (each of its styles), not its whole group: a set that ranks
a look-alike variant first ("settings-2" for "settings") misses. `name_relevance` is the
icon -> "group" mapping that `run_benchmark` scores these queries with. The sets' tags are
queries only: never trained on, fitted on or used as search vocabulary.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from icon_pipeline.library.matching import NameIndex
from icon_pipeline.library.naming import words
from icon_pipeline.search.names import spelled_name

NAMES_TASK = "names"
NAME_TASKS: dict[str, str] = {NAMES_TASK: "text"}


def name_relevance(library_names: Mapping[str, str], styles: Sequence[str] = ()) -> dict[str, str]:
    """icon_id -> "name:<spelled name>": each name is a relevance group of its own."""
    return {icon_id: f"name:{spelled_name(name, styles)}" for icon_id, name in library_names.items()}


def build_name_queries(
    library_names: Mapping[str, str],
    set_icons: Iterable[tuple[str, str, Sequence[str], Sequence[str]]] = (),
    styles: Sequence[str] = (),
    heldout_icons: frozenset[str] | set[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Rows for `run_benchmark(tasks=NAME_TASKS)`: every library name, then the unambiguous synonyms.

    `library_names`: icon_id -> name of every indexed icon; `set_icons`: (set, name, aliases, tags) of
    each icon of the external sets; `heldout_icons`: icons the model never trained on."""
    relevance = name_relevance(library_names, styles)
    icons_of: dict[str, list[str]] = defaultdict(list)
    for icon_id, group in relevance.items():
        icons_of[group].append(icon_id)
    rows: list[dict[str, Any]] = []
    for group in sorted(icons_of):
        text = group.removeprefix("name:")
        rows.append(_row(len(rows), text, group, "name", icons_of[group], heldout_icons))

    index = NameIndex.build(dict(library_names))
    own_names = {group.removeprefix("name:") for group in icons_of}
    meanings: dict[str, set[str]] = defaultdict(set)  # tag -> the library names it was written for
    sources: dict[str, set[str]] = defaultdict(set)
    for set_name, name, aliases, tags in set_icons:
        targets = {relevance[i] for i in index.match(name, aliases)}
        for tag in tags:
            text = " ".join(words(str(tag)))
            if text:
                # A tag of an icon that names no library icon, or several, makes it ambiguous.
                meanings[text] |= targets or {"(none)"}
                meanings[text] |= {"(several)"} if len(targets) > 1 else set()
                sources[text].add(set_name)
    for text in sorted(meanings):
        targets = meanings[text]
        if len(targets) != 1 or text in own_names:
            continue
        (group,) = targets
        if group.startswith("name:"):
            source = "synonym:" + "+".join(sorted(sources[text]))
            rows.append(_row(len(rows), text, group, source, icons_of[group], heldout_icons))
    return rows


def _row(
    n: int, text: str, group: str, source: str, icons: Sequence[str], heldout_icons: frozenset[str] | set[str]
) -> dict[str, Any]:
    return {
        "query_id": f"names:{n:05d}",
        "task": NAMES_TASK,
        "text": text,
        "relevant_group_ids": [group],
        "source": source,
        "heldout": bool(icons) and all(i in heldout_icons for i in icons),
    }


def set_icons_of(set_names: Sequence[str]) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """(set, name, aliases, tags) of every icon of the external sets that are fetched (one style
    each: tags are per icon); a set that cannot be read gives none (external_benchmark says why)."""
    from icon_pipeline.core.storage import asset_path
    from icon_pipeline.library.sources.icon_sets import IconSetError, icon_set, read_icon_set

    found = []
    for set_name in set_names:
        try:
            spec = icon_set(set_name, role="benchmark")
            drawings = read_icon_set(spec, asset_path("icon_set_versions", set=set_name).parent, spec.styles)
        except IconSetError:
            continue
        seen: set[str] = set()
        for drawing in drawings:
            if drawing.name not in seen:
                seen.add(drawing.name)
                found.append((set_name, drawing.name, tuple(drawing.aliases), tuple(drawing.tags)))
    return found


def run_name_queries(search: Any, set_names: Sequence[str], connections: Sequence[Any] = ()) -> Any:
    """The names set on the configured library, every channel of `search` scored (HNSW), as a
    BenchmarkReport of its own task (`merge_into` adds it to the main report)."""
    from icon_pipeline.benchmark.report import run_benchmark
    from icon_pipeline.core.storage import pairs_path, read_records
    from icon_pipeline.dataset.grouping import library_groups
    from icon_pipeline.library.catalog import read_catalog

    groups = library_groups()
    catalog = [icon for icon in read_catalog() if icon.icon_id in groups]
    names = {icon.icon_id: icon.name for icon in catalog}
    styles = sorted({icon.style for icon in catalog} - {""})
    heldout = {r["group_id"] for r in read_records(pairs_path(), "training_pairs") if r["split"] == "heldout"}
    queries = build_name_queries(
        names, set_icons_of(set_names), styles, {i for i, g in groups.items() if g in heldout}
    )
    return run_benchmark(
        queries,
        search,
        name_relevance(names, styles),
        modes=("hnsw",),
        connections=connections,
        tasks=NAME_TASKS,
    )


def merge_into(report: Any, names_report: Any) -> None:
    """Add the names set's rows, counts and comparisons to the main benchmark report (one report,
    one markdown table, one set of Dagster figures)."""
    report.rows.extend(names_report.rows)
    report.tasks.update(names_report.tasks)
    report.query_counts.update(names_report.query_counts)
    report.comparisons.extend(names_report.comparisons)
    report.warnings.extend(names_report.warnings)
    report.failures.extend(names_report.failures)
