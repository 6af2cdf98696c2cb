"""Caption review: browse and search icons with their image, lexicon and captions; approve, edit
or reject them. Decisions are overrides in PostgreSQL (icon_pipeline.captions.overrides) that the next
`icon_captions` run applies.

A save names the revision the reviewer started from; if someone saved in between, nothing is
stored and the page shows their version and asks (a "Save over theirs" button). If the database
is unreachable, the edit is queued in a local journal and saved by "Retry queued edits".

For speed: several icons of a page can be approved at once (their generated captions, each icon
a first decision, so nothing a reviewer already decided is overwritten); keys move between icons
and approve or reject (J/K, arrows, A, R; never while typing); icons whose caption contradicts
their own name or tags (icon_pipeline.captions.review) are marked and listed first; and an
edited caption shows what the reviewer removed and added.

With basic auth on (ICON_PIPELINE_APP_AUTH), a decision's author is the signed-in user, from the
page or the API alike; without it, the name the reviewer types.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gradio as gr

from icon_pipeline.apps import AppError, signed_in_user
from icon_pipeline.apps.common import (
    IconInfo,
    MissingAsset,
    batch_files,
    cached,
    catalog_file,
    gallery_items,
    load_icons,
    matches,
    missing_page,
    paginate,
    read_rows,
    require_batches,
    require_file,
)
from icon_pipeline.captions.overrides import (
    CaptionOverride,
    ConflictError,
    OverrideError,
    OverrideStore,
    PendingEdits,
    StoreUnavailable,
    clean_phrases,
    validate_override,
)
from icon_pipeline.captions.review import CaptionFlag, caption_flags, phrase_diff
from icon_pipeline.core.storage import asset_path, lexicon_path
from icon_pipeline.lexicon.mining import LexiconEntry

TITLE = "Caption review"
FILTERS = ("all", "flagged", "not reviewed", "approved", "edited", "rejected", "caption failed")
ACTIONS = {"approve": "approved", "save edit": "edited", "reject": "rejected"}
STATUS_MARK = {"approved": "✓", "edited": "✎", "rejected": "✗"}
FLAG_MARK = "⚠"
# On the page and in the key handler below: one list, so the hints cannot drift from the keys.
KEYS = {"j": "next-icon", "arrowright": "next-icon", "k": "prev-icon", "arrowleft": "prev-icon"}
KEYS |= {"a": "approve", "r": "reject"}
KEY_HINTS = (
    "**Keys:** `J` / `→` next icon · `K` / `←` previous icon · `A` approve · `R` reject "
    "(not while typing in a box)"
)


@dataclass(frozen=True)
class CaptionRow:
    icon_id: str
    phrases: list[str]  # as the last run wrote them (overrides applied)
    generated: list[str]  # what the captioner wrote
    route: str
    model: str
    error: str


def missing_assets() -> list[MissingAsset]:
    checks = [
        require_file(catalog_file(), "icon_catalog"),
        require_batches("rendered", "rendered_icons"),
        require_file(lexicon_file(), "icon_lexicon"),
        require_batches("captions", "icon_captions"),
    ]
    return [m for m in checks if m]


def lexicon_file() -> Path:
    return lexicon_path()


def load_captions() -> dict[str, CaptionRow]:
    files = batch_files("captions")

    def load() -> dict[str, CaptionRow]:
        rows = {}
        columns = ["icon_id", "phrases", "generated_phrases", "route", "model", "error"]
        for path in files:
            for row in read_rows(path, columns):
                phrases = list(row.get("phrases") or [])
                rows[row["icon_id"]] = CaptionRow(
                    icon_id=row["icon_id"],
                    phrases=phrases,
                    generated=list(row.get("generated_phrases") or phrases),
                    route=str(row.get("route") or ""),
                    model=str(row.get("model") or ""),
                    error=str(row.get("error") or ""),
                )
        return rows

    return cached("captions", files, load)


def load_lexicon() -> dict[str, dict[str, Any]]:
    path = lexicon_file()
    return cached("lexicon", [path], lambda: {r["key"]: r for r in read_rows(path)} if path.exists() else {})


def store() -> OverrideStore:
    """The override store on the pipeline's database, looked up per call so a restarted or
    reconfigured database is picked up; an unreachable one is StoreUnavailable."""
    from icon_pipeline.core.database import DatabaseError, ensure_database

    try:
        return OverrideStore(ensure_database().libpq_url)
    except DatabaseError as exc:
        raise StoreUnavailable(f"caption overrides: {exc}") from None


def pending() -> PendingEdits:
    return PendingEdits(asset_path("pending_overrides"))


# --- plain functions behind the page (also its API) ----------------------------------------------


def _status_of(icon_id: str, overrides: dict[str, CaptionOverride], captions: dict[str, CaptionRow]) -> str:
    if icon_id in overrides:
        return overrides[icon_id].status
    row = captions.get(icon_id)
    return "caption failed" if row is None or row.error else "not reviewed"


def _current_phrases(
    icon_id: str, overrides: dict[str, CaptionOverride], captions: dict[str, CaptionRow]
) -> list[str]:
    """The phrases training would use now: a reviewer's (unless rejected), else the last run's."""
    override = overrides.get(icon_id)
    if override and not override.rejected:
        return override.phrases
    row = captions.get(icon_id)
    return row.phrases if row else []


@lru_cache(maxsize=65536)
def _flags(
    name: str, tags: tuple[str, ...], category: str, phrases: tuple[str, ...]
) -> tuple[CaptionFlag, ...]:
    # every listing checks every matching icon: remember the answers for unchanged captions
    return tuple(caption_flags(name, tags, phrases, category))


def icon_flags(icon: IconInfo, phrases: Sequence[str]) -> tuple[CaptionFlag, ...]:
    return _flags(icon.name, tuple(icon.tags), icon.category, tuple(phrases))


def list_icons(query: str, show: str, page: float | None) -> tuple[list, str, list[str], int, str]:
    """One page of icons matching `query` (name, tag, category, phrase or id) and `show`; icons
    whose caption contradicts their name or tags come first.

    Returns (gallery items, page label, icon ids in gallery order, page number, notes).
    """
    missing = missing_assets()
    if missing:
        return [], missing_page(TITLE, missing), [], 1, ""
    icons = load_icons()
    captions = load_captions()
    notes = []
    try:
        overrides = store().load_all()
    except StoreUnavailable as exc:
        overrides = {}
        notes.append(f"**Overrides cannot be shown:** {exc}")
    show = show if show in FILTERS else "all"
    chosen = []
    flagged: set[str] = set()
    for icon in icons.values():
        row = captions.get(icon.icon_id)
        if not matches(
            query or "", icon.name, icon.icon_id, icon.category, icon.tags, row.phrases if row else ()
        ):
            continue
        status = _status_of(icon.icon_id, overrides, captions)
        # a rejected icon leaves training: what its caption says no longer matters
        if status != "rejected" and icon_flags(icon, _current_phrases(icon.icon_id, overrides, captions)):
            flagged.add(icon.icon_id)
        if show == "flagged" and icon.icon_id not in flagged:
            continue
        if show not in ("all", "flagged") and status != show:
            continue
        chosen.append(icon)
    chosen.sort(key=lambda i: (i.icon_id not in flagged, i.name, i.icon_id))
    current = paginate(chosen, page)

    def label(icon: IconInfo) -> str:
        mark = STATUS_MARK.get(overrides[icon.icon_id].status, "") if icon.icon_id in overrides else ""
        variant = f" ({icon.variant})" if icon.variant else ""
        flag = f" {FLAG_MARK}" if icon.icon_id in flagged else ""
        return f"{icon.name}{variant} {mark}".strip() + flag

    items, ids = gallery_items(current.items, label)
    unrendered = [i for i in current.items if not i.png_path]
    if unrendered:
        notes.append(
            "Not rendered (open them by id): "
            + ", ".join(f"`{i.icon_id}` ({i.render_status}: {i.render_reason})" for i in unrendered)
        )
    return items, current.label(), ids, current.page, "\n\n".join(notes)


def _lexicon_markdown(entry: LexiconEntry | None) -> str:
    if entry is None:
        return "_No lexicon entry for this icon._"
    dropped = ", ".join(f"~~{html.escape(t)}~~ ({html.escape(r)})" for t, r in entry.dropped) or "none"
    variant = ", ".join(f"{k}={v}" for k, v in sorted(entry.variant.items())) or "none"
    return (
        f"**Kept terms:** {', '.join(entry.terms) or 'none'}  \n"
        f"**Tag terms:** {', '.join(entry.tag_terms) or 'none'}  \n"
        f"**Dropped:** {dropped}  \n"
        f"**Variant:** {variant} · **useful tokens:** {entry.useful_token_count} · "
        f"**base name:** `{entry.base_name}`"
    )


def show_icon(icon_id: str) -> tuple[str | None, str, str, int, str]:
    """(image path, details markdown, phrases text to edit, revision to edit from, message)."""
    icon_id = (icon_id or "").strip()
    if not icon_id:
        return None, "", "", 0, "Pick an icon from the grid (or type its id)."
    missing = missing_assets()
    if missing:
        return None, missing_page(TITLE, missing), "", 0, ""
    icons = load_icons()
    icon = icons.get(icon_id)
    if icon is None:
        return None, "", "", 0, f"**No icon with id `{html.escape(icon_id)}`** in icon_catalog."
    caption = load_captions().get(icon_id)
    record = load_lexicon().get(icon_id)
    entry = LexiconEntry.from_record(record) if record else None
    message = ""
    override = None
    try:
        override = store().get(icon_id)
    except StoreUnavailable as exc:
        message = f"**Cannot read the current override:** {exc}. Saving is queued until the database is back."
    lines = [
        f"### {html.escape(icon.name)}",
        f"`{icon.icon_id}` · source {icon.source} · category {icon.category or '-'} · variant "
        f"{icon.variant or '-'} · batch {icon.batch_key}",
        f"**Tags:** {', '.join(icon.tags) or 'none'}",
        _lexicon_markdown(entry),
    ]
    if caption is None:
        lines.append("**Generated captions:** none (icon_captions has no row for this icon)")
    else:
        route = f"{caption.route} route, {caption.model}" if caption.route else "no route"
        generated = ", ".join(caption.generated) or "none"
        lines.append(f"**Generated captions** ({route}): {generated}")
        if caption.error:
            lines.append(f"**Caption error:** {html.escape(caption.error)}")
    if override:
        lines.append(f"**Override:** {override.describe()}: {', '.join(override.phrases) or '(no phrases)'}")
    else:
        lines.append("**Override:** none yet (the generated captions are used)")
    if override and override.status != "rejected":
        phrases = override.phrases
    else:
        phrases = (caption.phrases if caption else []) or (override.phrases if override else [])
    flags = icon_flags(icon, phrases) if not (override and override.rejected) else ()
    if flags:
        lines.append(
            f"**{FLAG_MARK} Contradicts the icon's name or tags:**  \n"
            + "  \n".join(f"- {html.escape(str(f))}" for f in flags)
        )
    image = icon.png_path if icon.png_path and Path(icon.png_path).exists() else None
    details = "\n\n".join(line for line in lines if line)  # one paragraph each
    return image, details, "\n".join(phrases), override.revision if override else 0, message


def save_caption(
    icon_id: str, phrases: str, action: str, author: str, revision: float | None
) -> tuple[str, int, bool, int]:
    """Approve, edit or reject from `revision`.

    Returns (message, revision now being edited from, whether to offer "Save over theirs",
    the revision that would overwrite). Nothing is ever dropped: a conflict stores nothing and
    says whose change is in the way; an unreachable database queues the edit locally.
    """
    status = ACTIONS.get((action or "").strip().lower(), (action or "").strip().lower())
    expected = int(revision or 0)
    icon_id = (icon_id or "").strip()
    author = " ".join((author or "").split())
    cleaned = clean_phrases(phrases or "")
    if icon_id and icon_id not in load_icons():
        return f"**Not saved:** no icon with id `{html.escape(icon_id)}`.", expected, False, 0
    try:
        validate_override(icon_id, cleaned, status, author)  # before the database: it may be away
        saved = store().save(icon_id, cleaned, status, author, expected)
    except ConflictError as exc:
        return f"**Conflict, not saved.** {html.escape(str(exc))}", expected, True, exc.current.revision
    except StoreUnavailable as exc:
        journal = pending()
        queued = journal.add(icon_id, cleaned, status, author, expected, str(exc))
        return (
            f"**Database unreachable, edit queued (not lost):** {html.escape(str(exc))}. "
            f"It is kept in `{journal.path}` and saved by *Retry queued edits* "
            f"(queued at {queued.queued_at}).",
            expected,
            False,
            0,
        )
    except OverrideError as exc:
        return f"**Not saved:** {html.escape(str(exc))}", expected, False, 0
    return (
        f"**Saved:** `{saved.icon_id}` {saved.describe()}. The next `icon_captions` run uses it.",
        saved.revision,
        False,
        0,
    )


def caption_diff(icon_id: str) -> str:
    """HTML: what a reviewer's decision changed in the generated phrases; "" when nothing did
    (no override, a rejection, or the generated phrases approved as they were)."""
    icon_id = (icon_id or "").strip()
    caption = load_captions().get(icon_id) if icon_id else None
    if caption is None or missing_assets():
        return ""
    try:
        override = store().get(icon_id)
    except StoreUnavailable:
        return ""  # show_icon already says the database is away
    if override is None or override.rejected or override.phrases == caption.generated:
        return ""
    ops = phrase_diff(caption.generated, override.phrases)
    removed = sum(op == "removed" for op, _ in ops)
    added = sum(op == "added" for op, _ in ops)
    style = {
        "removed": ("−", "color:#b42318;text-decoration:line-through", "del"),
        "added": ("+", "color:#067647;font-weight:600", "ins"),
        "kept": ("\u00a0", "color:inherit", "span"),
    }
    items = []
    for op, phrase in ops:
        sign, css, tag = style[op]
        items.append(f'<li class="{op}"><{tag} style="{css}">{sign} {html.escape(phrase)}</{tag}></li>')
    return (
        f'<div class="caption-diff"><p><b>Generated → {html.escape(override.describe())}</b>: '
        f"{removed} removed, {added} added</p>"
        f'<ul style="list-style:none;padding-left:0;margin:0">{"".join(items)}</ul></div>'
    )


def bulk_approve(icon_ids: Sequence[str] | None, author: str) -> str:
    """Approve the generated captions of several icons, as `author`, now.

    Each is the icon's first decision: an icon a reviewer already decided is skipped (open it to
    change that), as is one without usable captions; both are named with the reason. If the
    database is unreachable, the approvals are queued like single edits.
    """
    ids = list(dict.fromkeys(i.strip() for i in (icon_ids or []) if i and i.strip()))
    author = " ".join((author or "").split())
    if not ids:
        return "**Nothing approved:** select icons first."
    if not author:
        return "**Nothing approved:** say who you are (your name is empty)."
    missing = missing_assets()
    if missing:
        return missing_page(TITLE, missing)
    icons = load_icons()
    captions = load_captions()
    skipped: list[str] = []

    def who(icon_id: str) -> str:
        icon = icons.get(icon_id)
        return f"{html.escape(icon.name)} (`{icon_id}`)" if icon else f"`{html.escape(icon_id)}`"

    wanted: dict[str, list[str]] = {}
    for icon_id in ids:
        row = captions.get(icon_id)
        if icon_id not in icons:
            skipped.append(f"{who(icon_id)}: no such icon in icon_catalog")
        elif row is None or row.error or not row.generated:
            reason = row.error if row and row.error else "icon_captions has no phrases for it"
            skipped.append(f"{who(icon_id)}: nothing to approve ({html.escape(reason)})")
        else:
            wanted[icon_id] = row.generated
    lines = []
    try:
        target = store()
        decided = target.load_for(wanted)
        for icon_id, override in decided.items():
            skipped.append(f"{who(icon_id)}: already {html.escape(override.describe())}; open it to change")
            del wanted[icon_id]
        result = target.approve_many(wanted, author)
        unsaved, stopped = result.unsaved, result.stopped
    except StoreUnavailable as exc:
        result, unsaved, stopped = None, list(wanted), str(exc)
    if result and result.saved:
        names = ", ".join(who(o.icon_id) for o in result.saved)
        lines.append(f"**Approved {len(result.saved)} icon(s)** as {html.escape(author)}: {names}.")
    elif not unsaved:
        lines.append("**Nothing approved.**")
    for icon_id, why in result.refused if result else []:
        skipped.append(f"{who(icon_id)}: {html.escape(why.removeprefix(f'{icon_id}: '))}")
    if unsaved:
        journal = pending()
        for icon_id in unsaved:
            journal.add(icon_id, wanted[icon_id], "approved", author, 0, stopped or "database unreachable")
        lines.append(
            f"**Database unreachable, {len(unsaved)} approval(s) queued (not lost):** "
            f"{html.escape(stopped or '')}. Saved by *Retry queued edits*."
        )
    if skipped:
        lines.append(f"\nSkipped {len(skipped)}:")  # its own paragraph in Markdown
        lines += [f"- {line}" for line in skipped]
    return "\n".join(lines)


def step_icon(ids: Sequence[str] | None, current: str, step: int) -> str:
    """The icon `step` places from `current` in the page's order, stopping at either end; from an
    icon not on the page, the first (forward) or last (backward)."""
    ids = list(ids or [])
    current = (current or "").strip()
    if not ids:
        return current
    if current not in ids:
        return ids[0] if step > 0 else ids[-1]
    return ids[min(max(ids.index(current) + step, 0), len(ids) - 1)]


def retry_pending() -> str:
    """Save queued edits; says what was saved and what conflicted."""
    journal = pending()
    if not journal.all():
        return "No queued edits."
    try:
        target = store()
    except StoreUnavailable as exc:
        return f"**Still unreachable:** {html.escape(str(exc))}. {len(journal.all())} edit(s) stay queued."
    result = journal.replay(target)
    lines = [f"Saved {len(result.saved)} queued edit(s)."]
    if result.set_aside:
        lines.append(f"Set aside (kept in `{journal.set_aside_path}`):")
        lines += [f"- {html.escape(edit.icon_id)}: {html.escape(why)}" for edit, why in result.set_aside]
    if result.stopped:
        lines.append(f"Stopped: {html.escape(result.stopped)}. {len(journal.all())} edit(s) still queued.")
    return "\n".join(lines)


def pending_summary() -> str:
    edits = pending().all()
    if not edits:
        return ""
    return f"**{len(edits)} edit(s) queued** while the database was unreachable: press *Retry queued edits*."


# --- the page -------------------------------------------------------------------------------------

# Installed once per page. Keys are ignored while the reviewer types (text, number and dropdown
# inputs, text areas) or holds a modifier, so Ctrl-A or a typed "r" never approves or rejects.
# Each icon's label (name, variant, status and flag marks) on a line of its own under the icon, not
# Gradio's default badge over the thumbnail's lower right, which covers the icon.
GALLERY_CSS = """
#icons .thumbnail-item { aspect-ratio: auto; display: flex; flex-direction: column; }
#icons .thumbnail-item > img { flex: 1 1 auto; min-height: 0; height: auto; aspect-ratio: 1 / 1; }
#icons .caption-label { position: static; max-width: 100%; border: 0; border-radius: 0;
  border-top: 1px solid var(--border-color-primary); text-align: center; opacity: 1; }
"""
GALLERY_CSS_JS = """
() => {
  if (document.getElementById('icons-gallery-css')) return;
  const style = document.createElement('style');
  style.id = 'icons-gallery-css';
  style.textContent = __CSS__;
  document.head.appendChild(style);
}
""".replace("__CSS__", json.dumps(GALLERY_CSS))

KEYS_JS = """
() => {
  if (window.__captionKeys) return;
  window.__captionKeys = true;
  const targets = __TARGETS__;
  const typing = 'textarea, select, [contenteditable=""], [contenteditable="true"], '
    + 'input:not([type=checkbox]):not([type=radio]):not([type=button]):not([type=submit])';
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing || event.repeat) return;
    const target = event.target;
    if (target && target.closest && target.closest(typing)) return;
    const id = targets[event.key.toLowerCase()];
    const button = id && document.getElementById(id);
    if (!button) return;
    event.preventDefault();
    button.click();
  });
}
""".replace("__TARGETS__", json.dumps(KEYS))


def warm_up() -> None:
    """Read the tables once at start-up, so the first page load is as fast as the next ones."""
    if not missing_assets():
        load_icons()
        load_captions()
        load_lexicon()


def build() -> gr.Blocks:
    warm_up()
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nApprove, edit or reject captions; the next `icon_captions` run uses them. "
            f"Icons marked {FLAG_MARK} have a caption that contradicts their name or tags; they come first."
        )
        gr.Markdown(KEY_HINTS, elem_id="key-hints")
        with gr.Row():
            query = gr.Textbox(label="Search (name, tag, category, phrase, id)", scale=4, elem_id="query")
            show = gr.Dropdown(list(FILTERS), value="all", label="Show", scale=1)
            page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1)
            search = gr.Button("Search", variant="primary", scale=1)
        with gr.Row():
            previous = gr.Button("◀ Previous", size="sm")
            page_label = gr.Markdown(elem_id="page-label")
            following = gr.Button("Next ▶", size="sm")
        notes = gr.Markdown()
        gallery = gr.Gallery(
            label="Icons",
            columns=8,
            height=460,
            allow_preview=False,
            object_fit="contain",
            fit_columns=False,  # one result stays thumbnail-sized
            elem_id="icons",
        )
        page_ids = gr.State([])
        with gr.Accordion("Bulk approve (this page)", open=True):
            bulk_pick = gr.CheckboxGroup(
                choices=[], label="Icons whose generated captions to approve", elem_id="bulk-pick"
            )
            with gr.Row():
                select_all = gr.Button("Select all on this page", size="sm", elem_id="select-all")
                select_none = gr.Button("Clear selection", size="sm")
                bulk_button = gr.Button(
                    "Approve selected", variant="primary", size="sm", elem_id="bulk-approve"
                )
            bulk_message = gr.Markdown(elem_id="bulk-message")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Icon", interactive=False, height=240, type="filepath")
                icon_id = gr.Textbox(label="Icon id", elem_id="icon-id")
                open_button = gr.Button("Open", size="sm")
                with gr.Row():
                    prev_icon = gr.Button("◀ Previous icon (K)", size="sm", elem_id="prev-icon")
                    next_icon = gr.Button("Next icon (J) ▶", size="sm", elem_id="next-icon")
            with gr.Column(scale=3):
                details = gr.Markdown(elem_id="details")
                diff = gr.HTML(elem_id="diff")
                phrases = gr.Textbox(label="Phrases, one per line", lines=8, elem_id="phrases")
                with gr.Row():
                    author = gr.Textbox(label="Your name", elem_id="author", scale=2)
                    revision = gr.Number(
                        label="Editing from revision", precision=0, value=0, interactive=False, scale=1
                    )
                with gr.Row():
                    approve = gr.Button("Approve (A)", elem_id="approve")
                    edit = gr.Button("Save edit", variant="primary", elem_id="save-edit")
                    reject = gr.Button("Reject (R)", variant="stop", elem_id="reject")
                overwrite = gr.Button("Save over theirs", visible=False, elem_id="overwrite")
                message = gr.Markdown(elem_id="message")
                last_action = gr.State("save edit")
                conflict_revision = gr.State(0)
        with gr.Row():
            queued = gr.Markdown()
            retry = gr.Button("Retry queued edits", size="sm")

        def refresh(q: str, s: str, p: float) -> tuple:
            items, label, ids, number, note = list_icons(q, s, p)
            # the gallery's labels (status and flag marks) name the checkboxes, in the same order
            choices = [(caption, i) for (_, caption), i in zip(items, ids, strict=True)]
            picker = gr.update(choices=choices, value=[])
            return items, label, ids, number, note, pending_summary(), picker

        listing = [gallery, page_label, page_ids, page, notes, queued, bulk_pick]
        demo.load(refresh, [query, show, page], listing, api_visibility="private")
        for trigger in (search.click, query.submit, show.change):
            trigger(lambda q, s: refresh(q, s, 1), [query, show], listing, api_visibility="private")
        page.submit(refresh, [query, show, page], listing, api_visibility="private")
        previous.click(
            lambda q, s, p: refresh(q, s, (p or 1) - 1),
            [query, show, page],
            listing,
            api_visibility="private",
        )
        following.click(
            lambda q, s, p: refresh(q, s, (p or 1) + 1),
            [query, show, page],
            listing,
            api_visibility="private",
        )

        opened = [image, details, phrases, revision, message]

        def pick(ids: list[str], event: gr.SelectData) -> str:
            return ids[event.index] if 0 <= event.index < len(ids) else ""

        def open_icon(i: str) -> tuple:
            return (*show_icon(i), gr.update(visible=False), caption_diff(i))

        shown = [*opened, overwrite, diff]
        gallery.select(pick, [page_ids], [icon_id], api_visibility="private").then(
            open_icon, [icon_id], shown, api_visibility="private"
        )
        open_button.click(open_icon, [icon_id], shown, api_visibility="private")
        icon_id.submit(open_icon, [icon_id], shown, api_visibility="private")
        for button, step in ((prev_icon, -1), (next_icon, 1)):
            button.click(
                lambda ids, i, step=step: step_icon(ids, i, step),
                [page_ids, icon_id],
                [icon_id],
                api_visibility="private",
            ).then(open_icon, [icon_id], shown, api_visibility="private")
        # Keys click the buttons above, so a key does exactly what its button does.
        demo.load(None, None, None, js=KEYS_JS, api_visibility="private")
        demo.load(None, None, None, js=GALLERY_CSS_JS, api_visibility="private")

        def save_as_reviewer(
            icon_id: str, phrases: str, action: str, author: str, revision: float | None, request: gr.Request
        ) -> tuple[str, int, bool, int]:
            """save_caption; with basic auth on, the author is the signed-in user, whatever name the
            client sent (the page's box or an API call), so nobody saves under another's name."""
            try:
                author = signed_in_user(demo, request) or author
            except AppError as exc:
                return f"**Not saved:** {html.escape(str(exc))}", int(revision or 0), False, 0
            return save_caption(icon_id, phrases, action, author, revision)

        def act(action: str):
            def run(i: str, text: str, who: str, rev: float, request: gr.Request) -> tuple:
                note, rev_now, offer, theirs = save_as_reviewer(i, text, action, who, rev, request)
                return note, rev_now, gr.update(visible=offer), action, theirs, pending_summary()

            return run

        def show_reviewer(request: gr.Request):
            """With basic auth on, the name box shows who is signed in and cannot be changed."""
            try:
                user = signed_in_user(demo, request)
            except AppError:
                user = None
            return gr.update(value=user, interactive=False) if user else gr.update()

        demo.load(show_reviewer, None, [author], api_visibility="private")

        saved_outputs = [message, revision, overwrite, last_action, conflict_revision, queued]
        for button, action in ((approve, "approve"), (edit, "save edit"), (reject, "reject")):
            button.click(
                act(action), [icon_id, phrases, author, revision], saved_outputs, api_visibility="private"
            )

        def overwrite_theirs(i: str, text: str, who: str, action: str, theirs: int, request: gr.Request):
            return act(action)(i, text, who, theirs, request)

        def approve_selected(ids: list[str], who: str, request: gr.Request) -> str:
            """bulk_approve; with basic auth on, as the signed-in user (like single saves)."""
            try:
                who = signed_in_user(demo, request) or who
            except AppError as exc:
                return f"**Nothing approved:** {html.escape(str(exc))}"
            return bulk_approve(ids, who)

        select_all.click(
            lambda ids: gr.update(value=list(ids)), [page_ids], [bulk_pick], api_visibility="private"
        )
        select_none.click(lambda: gr.update(value=[]), None, [bulk_pick], api_visibility="private")
        bulk_button.click(
            approve_selected, [bulk_pick, author], [bulk_message], api_visibility="private"
        ).then(refresh, [query, show, page], listing, api_visibility="private")

        overwrite.click(
            overwrite_theirs,
            [icon_id, phrases, author, last_action, conflict_revision],
            saved_outputs,
            api_visibility="private",
        )
        retry.click(
            lambda: (retry_pending(), pending_summary()), None, [message, queued], api_visibility="private"
        )

        # The plain functions, as API endpoints for scripts and gradio_client.
        api = {"api_visibility": "undocumented"}
        gr.api(list_icons, api_name="list_icons", **api)
        gr.api(show_icon, api_name="show_icon", **api)
        gr.api(save_as_reviewer, api_name="save_caption", **api)
        gr.api(retry_pending, api_name="retry_pending", **api)
        gr.api(approve_selected, api_name="bulk_approve", **api)
        gr.api(caption_diff, api_name="caption_diff", **api)
    return demo
