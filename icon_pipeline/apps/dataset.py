"""The final dataset check: grouped training pairs (members, merged captions, why they were
grouped), held-out groups, and the frozen eval set with each caption's nearest training caption
and its similarity (the leakage guard, made visible)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from icon_pipeline.apps.common import (
    MissingAsset,
    cached,
    load_icons,
    matches,
    missing_page,
    paginate,
    read_rows,
    require_file,
)
from icon_pipeline.core.storage import EVAL_NAME, asset_path, eval_dir, frozen_set_path

TITLE = "Dataset check"
SPLITS = ("all", "train", "heldout")
EVAL_ORDERS = ("most similar first", "least similar first", "by group")
ROWS_PER_PAGE = 48
GROUP_HEADERS = ["group_id", "split", "size", "names", "grouped by", "captions"]
EVAL_HEADERS = ["caption", "nearest training caption", "similarity", "group_id", "names"]


@dataclass(frozen=True)
class GroupRow:
    group_id: str
    split: str
    members: list[str]
    names: list[str]
    captions: list[str]
    representative: str
    edges: list[dict[str, Any]]
    png_paths: list[str]


def pairs_file() -> Path:
    return asset_path("training_pairs")


def eval_file() -> Path | None:
    """The configured library's configured version of the frozen eval set, else its highest version."""
    try:
        from icon_pipeline.core.config import library_id, load_config

        config = load_config()
        folder = eval_dir(library_id(config))
        configured = frozen_set_path(EVAL_NAME, library_id(config), config.eval.version)
        if configured.exists():
            return configured
    except Exception:  # a broken config must not hide the data that is there
        folder = asset_path("eval_root")
    found = sorted(folder.rglob(f"{EVAL_NAME}.v*.jsonl")) if folder.is_dir() else []
    return found[-1] if found else None


def missing_assets() -> list[MissingAsset]:
    return [m for m in [require_file(pairs_file(), "training_pairs")] if m]


def load_groups() -> dict[str, GroupRow]:
    path = pairs_file()

    def load() -> dict[str, GroupRow]:
        groups = {}
        for row in read_rows(path):
            groups[row["group_id"]] = GroupRow(
                group_id=row["group_id"],
                split=str(row.get("split") or "train"),
                members=list(row.get("members") or []),
                names=list(row.get("names") or []),
                captions=list(row.get("captions") or []),
                representative=str(row.get("representative") or ""),
                edges=list(row.get("edges") or []),
                png_paths=list(row.get("png_paths") or []),
            )
        return groups

    return cached("groups", [path], load)


def load_eval() -> list[dict[str, Any]]:
    path = eval_file()
    if path is None:
        return []

    def load() -> list[dict[str, Any]]:
        from icon_pipeline.core.frozen import read_frozen_jsonl

        return read_frozen_jsonl(path)

    return cached("eval", [path], load)


def summary() -> str:
    missing = missing_assets()
    if missing:
        return missing_page(TITLE, missing)
    groups = load_groups().values()
    heldout = [g for g in groups if g.split == "heldout"]
    icons = sum(len(g.members) for g in groups)
    lines = [
        f"**{len(groups)} groups** of {icons} icons: {len(groups) - len(heldout)} train, "
        f"{len(heldout)} held out (never trained on). "
        f"{sum(len(g.captions) for g in groups)} captions after merging."
    ]
    rows = load_eval()
    path = eval_file()
    if path is None:
        lines.append(
            "The eval set has not been materialized yet: `icon-pipeline materialize eval_set` "
            f"(expected under `{asset_path('eval_root')}`)."
        )
    elif rows:
        sims = sorted(float(r.get("max_train_similarity") or 0) for r in rows)
        lines.append(
            f"**Eval set** `{path.name}`: {len(rows)} captions over {len({r['group_id'] for r in rows})} "
            f"groups; similarity to the nearest training caption: median {sims[len(sims) // 2]:.2f}, "
            f"max {sims[-1]:.2f}."
        )
    return "  \n".join(lines)


def _edge_summary(edges: list[dict[str, Any]]) -> str:
    reasons = sorted({e.get("reason", "") for e in edges})
    return ", ".join(reasons) if reasons else "alone"


def list_groups(query: str, split: str, page: float | None) -> tuple[list[list[Any]], str, list[str], int]:
    """One page of groups matching `query` (names, captions, ids) and `split`.

    Returns (table rows, page label, group ids in row order, page number).
    """
    if missing_assets():
        return [], missing_page(TITLE, missing_assets()), [], 1
    split = split if split in SPLITS else "all"
    chosen = [
        g
        for g in load_groups().values()
        if (split == "all" or g.split == split)
        and matches(query or "", g.group_id, g.names, g.captions, g.members)
    ]
    chosen.sort(key=lambda g: (-len(g.members), g.names[:1], g.group_id))
    current = paginate(chosen, page, ROWS_PER_PAGE)
    rows = [
        [
            g.group_id,
            g.split,
            len(g.members),
            ", ".join(g.names),
            _edge_summary(g.edges),
            "; ".join(g.captions),
        ]
        for g in current.items
    ]
    return rows, current.label("groups"), [g.group_id for g in current.items], current.page


def show_group(group_id: str) -> tuple[list[tuple[str, str]], str]:
    """(member images with names, markdown: captions, why the members were grouped, split)."""
    group = load_groups().get((group_id or "").strip()) if not missing_assets() else None
    if group is None:
        return [], f"No group `{html.escape(group_id or '')}` in training_pairs."
    try:
        icons = load_icons()
    except FileNotFoundError:
        icons = {}
    images = []
    for member, png in zip(group.members, group.png_paths, strict=False):
        name = icons[member].name if member in icons else member
        style = f" ({icons[member].variant})" if member in icons and icons[member].variant else ""
        if png and Path(png).exists():
            images.append((png, f"{name}{style}"))
    edges = "\n".join(
        f"- `{e.get('a')}` ~ `{e.get('b')}`: {e.get('reason')} ({html.escape(str(e.get('detail', '')))})"
        for e in group.edges
    )
    evals = [r for r in load_eval() if r.get("group_id") == group.group_id]
    markdown = [
        f"### Group `{group.group_id}` ({group.split}, {len(group.members)} icons)",
        f"**Representative:** `{group.representative}`",
        f"**Merged captions ({len(group.captions)}):** {', '.join(group.captions) or 'none'}",
        "**Grouped because:**\n" + (edges or "- a single icon"),
    ]
    if evals:
        markdown.append(
            "**Eval captions:** "
            + "; ".join(f"{r['caption']} (~{r.get('max_train_similarity', 0):.2f})" for r in evals)
        )
    return images, "\n\n".join(markdown)


def list_eval(query: str, order: str, page: float | None) -> tuple[list[list[Any]], str, list[str], int]:
    """One page of eval captions with their nearest training caption and similarity."""
    rows = load_eval()
    if not rows:
        return [], "the eval set has not been materialized yet (`icon-pipeline materialize eval_set`)", [], 1
    groups = load_groups() if not missing_assets() else {}
    chosen = []
    for row in rows:
        names = groups[row["group_id"]].names if row["group_id"] in groups else []
        if matches(
            query or "", row.get("caption"), row.get("nearest_training_caption"), row["group_id"], names
        ):
            chosen.append((row, names))
    if order == "least similar first":
        chosen.sort(key=lambda item: float(item[0].get("max_train_similarity") or 0))
    elif order == "by group":
        chosen.sort(key=lambda item: (item[0]["group_id"], str(item[0].get("eval_id", ""))))
    else:
        chosen.sort(key=lambda item: -float(item[0].get("max_train_similarity") or 0))
    current = paginate(chosen, page, ROWS_PER_PAGE)
    table = [
        [
            r.get("caption", ""),
            r.get("nearest_training_caption", ""),
            round(float(r.get("max_train_similarity") or 0), 3),
            r["group_id"],
            ", ".join(names),
        ]
        for r, names in current.items
    ]
    return table, current.label("eval captions"), [r["group_id"] for r, _ in current.items], current.page


def warm_up() -> None:
    """Read the tables once at start-up, so the first page load is as fast as the next ones."""
    if not missing_assets():
        load_groups()
        load_eval()


def build() -> gr.Blocks:
    warm_up()
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}")
        overview = gr.Markdown(elem_id="summary")
        with gr.Tab("Groups"):
            with gr.Row():
                g_query = gr.Textbox(label="Search (name, caption, id)", scale=4)
                g_split = gr.Dropdown(list(SPLITS), value="all", label="Split", scale=1)
                g_page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1)
                g_button = gr.Button("Search", scale=1)
            g_label = gr.Markdown()
            g_table = gr.Dataframe(headers=GROUP_HEADERS, interactive=False, wrap=True, max_height=420)
            g_ids = gr.State([])
        with gr.Tab("Eval set"):
            with gr.Row():
                e_query = gr.Textbox(label="Search (caption, name, group)", scale=4)
                e_order = gr.Dropdown(list(EVAL_ORDERS), value=EVAL_ORDERS[0], label="Order", scale=1)
                e_page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1)
                e_button = gr.Button("Search", scale=1)
            e_label = gr.Markdown()
            e_table = gr.Dataframe(headers=EVAL_HEADERS, interactive=False, wrap=True, max_height=420)
            e_ids = gr.State([])
        with gr.Row():
            group_images = gr.Gallery(
                label="Group members", columns=6, height=260, allow_preview=False, fit_columns=False
            )
            group_details = gr.Markdown()

        def groups(q: str, s: str, p: float) -> tuple:
            rows, label, ids, number = list_groups(q, s, p)
            return rows, label, ids, number

        def evals(q: str, o: str, p: float) -> tuple:
            rows, label, ids, number = list_eval(q, o, p)
            return rows, label, ids, number

        g_out = [g_table, g_label, g_ids, g_page]
        e_out = [e_table, e_label, e_ids, e_page]
        demo.load(lambda: summary(), None, overview, api_visibility="private")
        demo.load(groups, [g_query, g_split, g_page], g_out, api_visibility="private")
        demo.load(evals, [e_query, e_order, e_page], e_out, api_visibility="private")
        gr.on(
            [g_button.click, g_query.submit, g_split.change, g_page.submit],
            groups,
            [g_query, g_split, g_page],
            g_out,
            api_visibility="private",
        )
        gr.on(
            [e_button.click, e_query.submit, e_order.change, e_page.submit],
            evals,
            [e_query, e_order, e_page],
            e_out,
            api_visibility="private",
        )

        def pick(ids: list[str], event: gr.SelectData) -> tuple:
            row = event.index[0] if isinstance(event.index, list | tuple) else event.index
            return show_group(ids[row]) if 0 <= row < len(ids) else ([], "")

        g_table.select(pick, [g_ids], [group_images, group_details], api_visibility="private")
        e_table.select(pick, [e_ids], [group_images, group_details], api_visibility="private")

        api = {"api_visibility": "undocumented"}
        gr.api(summary, api_name="summary", **api)
        gr.api(list_groups, api_name="list_groups", **api)
        gr.api(show_group, api_name="show_group", **api)
        gr.api(list_eval, api_name="list_eval", **api)
    return demo
