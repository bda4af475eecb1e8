"""Entity-level precision, recall and F1 on CoNLL-2003 test.

- baseline: the statistical model alone (en_core_web_sm 3.8.0), OntoNotes labels mapped to CoNLL;
- project: ragstream's recogniser: the same model behind its gazetteer entity_ruler, whose
  patterns are the entities of the CoNLL *train* split (standing in for the graph's known
  entities; only names that train gives one unambiguous class become patterns).

Label mapping (ragstream.nlp.normalise.LABEL_CLASS): PERSON->PER; ORG->ORG; GPE, LOC, FAC->LOC;
NORP, EVENT, WORK_OF_ART, LAW, LANGUAGE, PRODUCT->MISC; DATE, TIME, MONEY, PERCENT, QUANTITY,
ORDINAL, CARDINAL->(not an entity). Scoring is exact span and class match, as conlleval.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # noqa: E402
from ragstream.datasets import shared_data_dir  # noqa: E402
from ragstream.nlp.recognise import Recogniser  # noqa: E402


def read_conll(path: Path) -> list[list[tuple[str, str]]]:
    """Sentences of (token, IOB tag), -DOCSTART- lines dropped."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if current:
                sentences.append(current)
            current = []
            continue
        parts = line.split()
        current.append((parts[0], parts[-1]))
    if current:
        sentences.append(current)
    return sentences


def gold_spans(sentence: list[tuple[str, str]]) -> set[tuple[int, int, str]]:
    """(start char, end char, class) with tokens joined by single spaces; IOB1 and IOB2 both."""
    spans, start, cls, offset, end = set(), None, None, 0, 0
    for token, tag in sentence:
        kind, _, label = tag.partition("-")
        if start is not None and (tag == "O" or kind == "B" or label != cls):
            spans.add((start, end, cls))
            start = None
        if tag != "O" and start is None:
            start, cls = offset, label
        end = offset + len(token)
        offset = end + 1
    if start is not None:
        spans.add((start, end, cls))
    return spans


def train_patterns(path: Path) -> list[dict]:
    classes: dict[str, Counter] = defaultdict(Counter)
    for sentence in read_conll(path):
        text = " ".join(t for t, _ in sentence)
        for start, end, cls in gold_spans(sentence):
            classes[text[start:end]][cls] += 1
    return [{"label": c.most_common(1)[0][0], "pattern": name, "id": f"train:{name}"}
            for name, c in sorted(classes.items()) if len(c) == 1 and sum(c.values()) >= 2]


def score(recogniser: Recogniser, sentences) -> dict:
    texts = [" ".join(t for t, _ in s) for s in sentences]
    tp = fp = fn = 0
    for sentence, mentions in zip(sentences, recogniser.recognise(texts), strict=True):
        gold = gold_spans(sentence)
        found = {(m.start, m.end, m.cls) for m in mentions}
        tp += len(gold & found)
        fp += len(found - gold)
        fn += len(gold - found)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "gold": tp + fn}


def main() -> None:
    parser = harness.parser(__doc__, quick="the first 800 sentences",
                            data="a CoNLL-format file (default: CoNLL-2003 test)")
    parser.add_argument("--train", type=Path, help="CoNLL file for the gazetteer (default: train)")
    args = parser.parse_args()
    conll = shared_data_dir() / "conll2003"
    sentences = read_conll(args.data or conll / "test.txt")
    if args.quick:
        sentences = sentences[:800]
    baseline = score(Recogniser(gazetteer=False, batch_size=256), sentences)
    project_recogniser = Recogniser(batch_size=256)
    patterns = train_patterns(args.train or conll / "train.txt")
    project_recogniser.use_gazetteer(patterns)
    project = score(project_recogniser, sentences)
    harness.table([("", "<10"), ("precision", ">10.4f"), ("recall", ">10.4f"), ("F1", ">10.4f")],
                  [(name, s["precision"], s["recall"], s["f1"])
                   for name, s in (("baseline", baseline), ("project", project))])
    print(f"{len(sentences)} sentences, {baseline['gold']} gold entities, "
          f"{len(patterns)} gazetteer patterns from train")
    harness.report(
        "ner_conll", "entity_f1", round(baseline["f1"], 4), round(project["f1"], 4),
        round(project["f1"] / baseline["f1"], 3), "F1",
        baseline_precision=round(baseline["precision"], 4),
        baseline_recall=round(baseline["recall"], 4),
        project_precision=round(project["precision"], 4),
        project_recall=round(project["recall"], 4), sentences=len(sentences),
        gold_entities=baseline["gold"], gazetteer_patterns=len(patterns),
        baseline_desc="en_core_web_sm 3.8.0 NER, OntoNotes->CoNLL label map")


if __name__ == "__main__":
    main()
