"""Benchmark queries, split evenly across three tasks.

- text2img: unseen short captions (the eval set's paraphrases, never training captions);
- semantic2img: intent sentences a designer would type ("I want to hide this layer"), filled
  from icon_pipeline/data/intent_templates.json and the group's captions;
- img2img: degraded copies of icon renders (augment.degrade), written as PNG files.

Every row: query_id, task, text, image_path, degradation, relevant_group_ids,
relevant_icon_ids, source_icon_id, heldout (version 2 adds source_terms).

Relevance of text queries (version 2): the groups the query was written for, and every group whose
name, tags or captions carry the query's source term: the query itself for text2img (an unseen
caption), the caption an intent sentence was built from for semantic2img. In version 1 the query
"settings" counted only the one group it happened to be written for, so every search that put the
settings icon first was scored a miss.

For img2img the source icon is excluded from the
relevant icons (the metric must drop it from the ranking too), so img2img sources come from
groups with at least `img2img_min_group_size` members. Queries whose relevant groups are all
held out are marked `heldout`. Deterministic for a seed, degraded image bytes included.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from icon_pipeline.core.hashing import stable_key
from icon_pipeline.core.package_data import data_file
from icon_pipeline.dataset.augment import DEGRADATION_KINDS, degrade
from icon_pipeline.dataset.evalset import Paraphraser
from icon_pipeline.dataset.grouping import Group, normalise_caption

DEFAULT_INTENT_TEMPLATES = data_file("intent_templates.json")
TASKS: tuple[str, ...] = ("text2img", "semantic2img", "img2img")
_PREFIX = {"text2img": "t2i", "semantic2img": "s2i", "img2img": "i2i"}


@dataclass(frozen=True)
class IntentTemplates:
    verbs: frozenset[str]
    verb_object: tuple[str, ...]
    verb: tuple[str, ...]
    noun: tuple[str, ...]

    @classmethod
    def load(cls, path: str | Path = DEFAULT_INTENT_TEMPLATES) -> IntentTemplates:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            templates = data["templates"]
            loaded = cls(
                verbs=frozenset(v.lower() for v in data["verbs"]),
                verb_object=tuple(templates["verb_object"]),
                verb=tuple(templates["verb"]),
                noun=tuple(templates["noun"]),
            )
        except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"intent templates {path}: unusable ({type(exc).__name__}: {exc})") from None
        for kind, needed in (("verb_object", "{verb}"), ("verb", "{verb}"), ("noun", "{phrase}")):
            items = getattr(loaded, kind)
            if not items or not all(needed in t for t in items):
                raise ValueError(f"intent templates {path}: every `{kind}` template must contain {needed}")
        return loaded

    def sentence(self, caption: str, rng: random.Random) -> str:
        """An intent sentence for one caption: verb captions get action templates."""
        words = normalise_caption(caption).split()
        if words and words[0] in self.verbs:
            if len(words) > 1:
                template = rng.choice(self.verb_object)
                return template.format(verb=words[0], object=" ".join(words[1:]))
            return rng.choice(self.verb).format(verb=words[0])
        return rng.choice(self.noun).format(phrase=" ".join(words))


def _captions_by_group(
    eval_rows_or_captions: Mapping[str, Sequence[str]] | Iterable[Mapping[str, Any]],
) -> dict[str, dict[str, set[str]]]:
    """group_id -> caption -> its source terms (the caption itself).

    Accepts eval-set rows ({group_id, caption}) or a group_id -> captions mapping."""
    result: dict[str, dict[str, set[str]]] = defaultdict(dict)
    if isinstance(eval_rows_or_captions, Mapping):
        items = ((gid, c) for gid, caps in eval_rows_or_captions.items() for c in caps)
    else:
        items = ((row["group_id"], row["caption"]) for row in eval_rows_or_captions)
    for gid, caption in items:
        norm = normalise_caption(caption)
        if norm:
            result[gid].setdefault(norm, {norm})
    return result


def group_terms(
    groups: Iterable[Group], tags: Mapping[str, Sequence[str]] | None = None
) -> dict[str, set[str]]:
    """group_id -> every phrase the group carries: member names (separators as spaces), the
    members' tags (`tags`: icon_id -> tags) and the group's captions, normalised."""
    tags = tags or {}
    result: dict[str, set[str]] = {}
    for group in groups:
        phrases = {normalise_caption(name.replace("-", " ").replace("_", " ")) for name in group.names}
        phrases |= {normalise_caption(str(t)) for m in group.members for t in tags.get(m, ())}
        phrases |= {normalise_caption(c) for c in group.captions}
        result[group.group_id] = {p for p in phrases if p}
    return result


def task_counts(total: int) -> dict[str, int]:
    """Even split; the remainder goes to the first tasks (2,968 -> 990, 989, 989)."""
    base, extra = divmod(total, len(TASKS))
    return {task: base + (1 if i < extra else 0) for i, task in enumerate(TASKS)}


def _pick(
    task: str,
    train_pool: list[Any],
    heldout_pool: list[Any],
    n: int,
    heldout_share: float,
    rng: random.Random,
) -> list[Any]:
    """Up to n items, `heldout_share` of them held out; fewer when the pools are smaller (a cap)."""
    n_heldout = min(len(heldout_pool), round(n * heldout_share))
    n_train = min(len(train_pool), n - n_heldout)
    n_heldout = min(len(heldout_pool), n - n_train)  # let held-out fill a short train pool
    picked = rng.sample(train_pool, n_train) + rng.sample(heldout_pool, n_heldout)
    rng.shuffle(picked)
    return picked


def build_benchmark_queries(
    groups: Iterable[Group],
    split: Mapping[str, str],
    eval_rows_or_captions: Mapping[str, Sequence[str]] | Iterable[Mapping[str, Any]],
    images: Mapping[str, str | Path],
    *,
    out_image_dir: str | Path,
    total: int = 2968,
    seed: int = 0,
    intent_templates: IntentTemplates | None = None,
    paraphraser: Paraphraser | None = None,
    heldout_share: float | None = None,
    img2img_min_group_size: int = 2,
    degradation_kinds: Sequence[str] = DEGRADATION_KINDS,
    terms: Mapping[str, set[str]] | None = None,
) -> list[dict[str, Any]]:
    """Build up to `total` queries evenly across text2img, semantic2img and img2img (`total` is a
    cap: a small library gives what it has; summarize_queries says how many each task got).

    img2img queries are degraded copies of one variant of a concept, relevant: its other variants.
    A library without enough variants (a folder of one-off icons) also gets copies of icons with no
    variant, relevant: the icon itself (`exclude_source` false), so every library that has icons
    has img2img queries.

    `paraphraser` (optional) writes text2img captions for held-out groups that have none in
    `eval_rows_or_captions` (the eval set only samples train-side groups). `heldout_share` of each
    task's queries come from held-out groups (default: their share of all groups). `terms`
    (group_terms) makes text queries relevant to every group carrying their source term (version 2);
    without it only the groups a query was written for are relevant (version 1).
    """
    if total < len(TASKS):
        raise ValueError(f"total must be at least {len(TASKS)} (one query per task), got {total}")
    unknown = [k for k in degradation_kinds if k not in DEGRADATION_KINDS]
    if unknown or not degradation_kinds:
        raise ValueError(
            f"degradation kinds {unknown or '[]'} unknown or empty; known: {', '.join(DEGRADATION_KINDS)}"
        )
    groups = sorted(groups, key=lambda g: g.group_id)
    by_id = {g.group_id: g for g in groups}
    missing = [g.group_id for g in groups if g.group_id not in split]
    if missing:
        raise ValueError(f"{len(missing)} group(s) have no split assignment, e.g. {missing[0]}")
    is_heldout = {gid: split[gid] == "heldout" for gid in by_id}
    if heldout_share is None:
        heldout_share = sum(is_heldout.values()) / max(1, len(groups))
    templates = intent_templates or IntentTemplates.load()
    counts = task_counts(total)
    rows = _text2img(
        groups,
        by_id,
        is_heldout,
        eval_rows_or_captions,
        paraphraser,
        counts["text2img"],
        heldout_share,
        seed,
        terms,
    )
    rows += _semantic2img(
        groups, by_id, is_heldout, templates, counts["semantic2img"], heldout_share, seed, terms
    )
    rows += _img2img(
        groups,
        by_id,
        is_heldout,
        images,
        Path(out_image_dir),
        counts["img2img"],
        heldout_share,
        seed,
        img2img_min_group_size,
        degradation_kinds,
    )
    return rows


def _text2img(
    groups: list[Group],
    by_id: Mapping[str, Group],
    is_heldout: Mapping[str, bool],
    eval_rows_or_captions: Mapping[str, Sequence[str]] | Iterable[Mapping[str, Any]],
    paraphraser: Paraphraser | None,
    count: int,
    heldout_share: float,
    seed: int,
    terms: Mapping[str, set[str]] | None,
) -> list[dict[str, Any]]:
    # text2img: one query per distinct caption; every group proposing that text is relevant.
    text_captions = _captions_by_group(eval_rows_or_captions)
    unknown_groups = sorted(set(text_captions) - set(by_id))
    if unknown_groups:
        raise ValueError(
            f"eval captions name {len(unknown_groups)} unknown group(s), e.g. {unknown_groups[0]}"
        )
    if paraphraser is not None:
        for group in groups:
            if is_heldout[group.group_id] and not text_captions.get(group.group_id) and group.captions:
                fresh = [normalise_caption(c) for c in paraphraser.paraphrase(group, 3, 0)]
                text_captions[group.group_id] = {
                    c: {c} for c in dict.fromkeys(fresh) if 1 <= len(c.split()) <= 4
                }
    return _text_rows(
        "text2img",
        text_captions,
        count,
        is_heldout,
        by_id,
        heldout_share,
        seed,
        terms,
    )


def _semantic2img(
    groups: list[Group],
    by_id: Mapping[str, Group],
    is_heldout: Mapping[str, bool],
    templates: IntentTemplates,
    count: int,
    heldout_share: float,
    seed: int,
    terms: Mapping[str, set[str]] | None,
) -> list[dict[str, Any]]:
    # semantic2img: intent sentences from the group's (training) captions.
    sentence_rng = random.Random(stable_key(seed, "semantic2img", "templates"))
    sentences: dict[str, dict[str, set[str]]] = {}
    for group in groups:
        chosen = random.Random(stable_key(seed, group.group_id)).sample(
            list(group.captions), min(3, len(group.captions))
        )
        sentences[group.group_id] = {
            templates.sentence(c, sentence_rng): {normalise_caption(c)} for c in chosen
        }
    return _text_rows(
        "semantic2img",
        sentences,
        count,
        is_heldout,
        by_id,
        heldout_share,
        seed,
        terms,
    )


def _img2img(
    groups: list[Group],
    by_id: Mapping[str, Group],
    is_heldout: Mapping[str, bool],
    images: Mapping[str, str | Path],
    out_dir: Path,
    count: int,
    heldout_share: float,
    seed: int,
    img2img_min_group_size: int,
    degradation_kinds: Sequence[str],
) -> list[dict[str, Any]]:
    # img2img: degraded copies of member renders; the source is not a relevant result.
    rows: list[dict[str, Any]] = []
    pools: dict[bool, list[tuple[str, str]]] = {False: [], True: []}
    for group in groups:
        if group.size < img2img_min_group_size:
            continue
        for icon_id in group.members:
            if icon_id in images:
                pools[is_heldout[group.group_id]].append((group.group_id, icon_id))
    picked = _pick(
        "img2img",
        pools[False],
        pools[True],
        count,
        heldout_share,
        random.Random(stable_key(seed, "img2img")),
    )
    short = count - len(picked)
    if short > 0:
        # Too few variants: the icon itself is the answer to a screenshot of it.
        singles: dict[bool, list[tuple[str, str]]] = {False: [], True: []}
        for group in groups:
            if group.size < img2img_min_group_size:
                for icon_id in group.members:
                    if icon_id in images:
                        singles[is_heldout[group.group_id]].append((group.group_id, icon_id))
        picked += _pick(
            "img2img",
            singles[False],
            singles[True],
            short,
            heldout_share,
            random.Random(stable_key(seed, "img2img", "self")),
        )
    if picked:
        out_dir.mkdir(parents=True, exist_ok=True)
    for index, (group_id, icon_id) in enumerate(picked):
        query_id = f"{_PREFIX['img2img']}-{index:05d}"
        kind = degradation_kinds[index % len(degradation_kinds)]
        source = Path(images[icon_id])
        try:
            with Image.open(source) as image:
                degraded = degrade(image, kind, random.Random(stable_key(seed, query_id, icon_id)))
        except OSError as exc:
            raise ValueError(
                f"img2img query {query_id}: cannot read the render of {icon_id} at {source}: {exc}"
            ) from None
        target = out_dir / f"{query_id}.png"
        degraded.save(target, format="PNG")
        group = by_id[group_id]
        variants = group.size >= img2img_min_group_size
        row = {
            "query_id": query_id,
            "task": "img2img",
            "text": None,
            "image_path": str(target),
            "degradation": kind,
            "relevant_group_ids": [group_id],
            "relevant_icon_ids": [m for m in group.members if m != icon_id] if variants else [icon_id],
            "source_icon_id": icon_id,
            "heldout": is_heldout[group_id],
        }
        if not variants:
            row["exclude_source"] = False  # the icon is its own answer
        rows.append(row)
    return rows


def _text_rows(
    task: str,
    texts_by_group: Mapping[str, Mapping[str, set[str]]],
    n: int,
    is_heldout: Mapping[str, bool],
    by_id: Mapping[str, Group],
    heldout_share: float,
    seed: int,
    terms: Mapping[str, set[str]] | None = None,
) -> list[dict[str, Any]]:
    groups_by_text: dict[str, list[str]] = defaultdict(list)
    sources: dict[str, set[str]] = defaultdict(set)
    for gid in sorted(texts_by_group):
        for text, source_terms in texts_by_group[gid].items():
            if gid not in groups_by_text[text]:
                groups_by_text[text].append(gid)
            sources[text] |= source_terms
    if terms is not None:
        carriers: dict[str, set[str]] = defaultdict(set)
        for gid, phrases in terms.items():
            for phrase in phrases:
                carriers[phrase].add(gid)
        for text, proposing in groups_by_text.items():
            extra = set().union(*(carriers.get(term, set()) for term in sources[text])) & set(by_id)
            extra -= set(proposing)
            proposing.extend(sorted(extra))
    pools: dict[bool, list[str]] = {False: [], True: []}
    for text in sorted(groups_by_text):
        pools[all(is_heldout[g] for g in groups_by_text[text])].append(text)
    picked = _pick(task, pools[False], pools[True], n, heldout_share, random.Random(stable_key(seed, task)))
    rows = []
    for index, text in enumerate(picked):
        relevant = groups_by_text[text]
        row = {
            "query_id": f"{_PREFIX[task]}-{index:05d}",
            "task": task,
            "text": text,
            "image_path": None,
            "degradation": None,
            "relevant_group_ids": relevant,
            "relevant_icon_ids": sorted({m for g in relevant for m in by_id[g].members}),
            "source_icon_id": None,
            "heldout": all(is_heldout[g] for g in relevant),
        }
        if terms is not None:
            row["source_terms"] = sorted(sources[text])
        rows.append(row)
    return rows


def summarize_queries(rows: Iterable[Mapping[str, Any]], total: int | None = None) -> dict[str, Any]:
    """Counts per task, held-out share and degradation kinds, for asset metadata; with `total`
    (queries.total), what each task was asked for and, in words, any shortfall."""
    rows = list(rows)
    per_task = Counter(r["task"] for r in rows)
    heldout = Counter(r["task"] for r in rows if r["heldout"])
    shortfall = {}
    if total is not None:
        for task, asked in task_counts(total).items():
            if per_task.get(task, 0) < asked:
                shortfall[task] = (
                    f"{per_task.get(task, 0)} of the {asked} queries.total asks for: the library has no more"
                )
    return {
        "queries": len(rows),
        "shortfall": shortfall,
        "self_img2img_queries": sum(
            1 for r in rows if r["task"] == "img2img" and r.get("exclude_source") is False
        ),
        "per_task": dict(sorted(per_task.items())),
        "heldout_per_task": {t: heldout.get(t, 0) for t in sorted(per_task)},
        "degradations": dict(sorted(Counter(r["degradation"] for r in rows if r["degradation"]).items())),
        "multi_group_queries": sum(1 for r in rows if len(r["relevant_group_ids"]) > 1),
    }


def fitting_queries(
    eval_rows: Iterable[Mapping[str, Any]],
    groups: Iterable[Group],
    images: Mapping[str, str | Path],
    *,
    seed: int = 0,
    terms: Mapping[str, set[str]] | None = None,
    intent_templates: IntentTemplates | None = None,
    copies_per_group: int = 3,
    max_image_queries: int = 600,
    degradation_kinds: Sequence[str] = DEGRADATION_KINDS,
) -> list[dict[str, Any]]:
    """Queries to fit hybrid search on, built from the frozen eval set only (never the benchmark's):

    - text: every distinct eval caption;
    - intent: one sentence per eval group, from one of its eval captions and the intent templates;
    - image: `copies_per_group` degraded copies of icons of each eval group, relevant: the group's
      other variants (or, for a library without variants, the icon itself).

    Text relevance follows the benchmark's (version 2, with `terms` from group_terms): the group a
    query was written for and every group carrying its source term. Rows: {kind, text | image (PIL),
    relevant_groups, exclude}. Deterministic for a seed.
    """
    templates = intent_templates or IntentTemplates.load()
    by_id = {g.group_id: g for g in groups}
    carriers: dict[str, set[str]] = defaultdict(set)
    for group_id, phrases in (terms or {}).items():
        for phrase in phrases:
            carriers[phrase].add(group_id)

    # One query per distinct text, relevant to every group it was written for, as in the benchmark:
    # two groups proposing "settings" are one query that either answers, not two that each miss
    # when the other one ranks first.
    texts: dict[str, set[str]] = {}

    def add_text(text: str, group_id: str, source: str) -> None:
        texts.setdefault(text, set()).update({group_id} | carriers.get(source, set()))

    captions: dict[str, list[str]] = defaultdict(list)
    for row in eval_rows:
        caption = normalise_caption(row["caption"])
        if caption and row["group_id"] in by_id:
            add_text(caption, row["group_id"], caption)
            captions[row["group_id"]].append(caption)
    sentence_rng = random.Random(stable_key(seed, "fit", "intent"))
    for group_id in sorted(captions):
        caption = random.Random(stable_key(seed, "fit", group_id)).choice(captions[group_id])
        add_text(templates.sentence(caption, sentence_rng), group_id, caption)
    rows: list[dict[str, Any]] = [
        {"kind": "text", "text": text, "relevant_groups": sorted(relevant), "exclude": []}
        for text, relevant in texts.items()
    ]
    eval_groups = [by_id[g] for g in sorted(captions)]
    with_variants = [g for g in eval_groups if sum(m in images for m in g.members) >= 2]
    pool = with_variants or eval_groups
    chosen = random.Random(stable_key(seed, "fit", "images")).sample(pool, len(pool))
    made = 0
    for group in chosen:
        for copy in range(copies_per_group):
            if made >= max_image_queries:
                break
            rng = random.Random(stable_key(seed, "fit", "image", group.group_id, copy))
            icon_id = rng.choice([m for m in group.members if m in images])
            with Image.open(images[icon_id]) as image:
                degraded = degrade(image, degradation_kinds[made % len(degradation_kinds)], rng)
            rows.append(
                {
                    "kind": "image",
                    "image": degraded,
                    "relevant_groups": [group.group_id],
                    "exclude": [icon_id] if group in with_variants else [],
                }
            )
            made += 1
    return rows
