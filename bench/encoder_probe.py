"""How well a pretrained encoder reads intent data before any fine-tuning: a linear probe.

Why: an encoder is built once and every student starts from it; a full few-shot run takes
many minutes, a probe seconds. A logistic regression on the network's pooled states of N
examples an intent (seeded draw), scored on the test set, beside the same network with random
weights (the baseline) and, where the pretrained extras are installed, the teacher's own
sentence embedding (the ceiling).

    .venv/bin/python -m bench.encoder_probe ENCODER [--datasets banking77 snips] [--per-intent 10]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from bench.common import apply_threads, base_parser, load_datasets, subsample_per_intent, table, write_results
from model.tokenizer import PAD, UNK, Tokenizer
from training.config import TrainConfig
from training.encoder import PretrainedEncoder, start_from
from training.network import Batch, IntentNet


def _features(net: IntentNet, tokenizer: Tokenizer) -> Callable[[Sequence[str]], np.ndarray]:
    def run(texts: Sequence[str]) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            parts = [
                net(Batch.from_encoded([tokenizer.encode(t) for t in texts[i : i + 256]])).features.numpy()
                for i in range(0, len(texts), 256)
            ]
        return np.concatenate(parts)

    return run


def probe(
    embed: Callable[[Sequence[str]], np.ndarray],
    train: tuple[list[str], list[str]],
    test: tuple[list[str], list[str]],
) -> float:
    """Test accuracy of a logistic regression on unit-length features of `train` (texts, intents)."""
    from sklearn.linear_model import LogisticRegression

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)

    clf = LogisticRegression(C=100, max_iter=3000).fit(unit(embed(train[0])), train[1])
    return float((clf.predict(unit(embed(test[0]))) == np.asarray(test[1])).mean())


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("encoder", help="an encoder file (intently encoder build)")
    parser.add_argument("--per-intent", type=int, default=10)
    args = parser.parse_args()
    apply_threads(args.threads)
    encoder = PretrainedEncoder.load(args.encoder)
    cfg = TrainConfig(bag_buckets=0, bag_char_ngrams=False)
    vocab = [PAD, UNK, *encoder.words]
    tokenizer = Tokenizer(vocab, cfg.tokenizer_config())
    torch.manual_seed(args.seed)
    pretrained = IntentNet(cfg.network_config(len(vocab), 2))
    start_from(pretrained, vocab, encoder)
    systems: dict[str, Callable[[Sequence[str]], np.ndarray]] = {
        "random weights (baseline)": _features(IntentNet(cfg.network_config(len(vocab), 2)), tokenizer),
        "the encoder": _features(pretrained, tokenizer),
    }
    from training import pretrained as teachers

    if teachers.packages_installed():
        systems["teacher embedding (ceiling)"] = teachers.load_encoder(teachers.DEFAULT_ENCODER).encode
    rows, results = [], {}
    for name, (train_ex, test_ex) in load_datasets(args.datasets).items():
        subset = subsample_per_intent(train_ex, args.per_intent, args.seed)
        train = ([e.text for e in subset], [e.intent for e in subset])
        test = ([e.text for e in test_ex], [e.intent for e in test_ex])
        results[name] = {system: probe(embed, train, test) for system, embed in systems.items()}
        rows += [[name, system, f"{100 * acc:.1f}"] for system, acc in results[name].items()]
    print(table(["dataset", "features", f"probe accuracy % ({args.per_intent} an intent)"], rows))
    print(f"encoder: {encoder.checksum}, {encoder.facts.get('sentences')} messages")
    write_results(
        "encoder-probe", {"encoder": encoder.checksum, "per_intent": args.per_intent, "results": results}
    )


if __name__ == "__main__":
    main()
