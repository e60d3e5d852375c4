"""Hostile and broken input at every entry point: one clear error, exit 2, nothing written.

Each CLI case runs ``nasprune.cli.main`` in-process and checks the contract users rely on:
exit code 2, exactly one ``error:`` line that names the problem, no traceback, and no
``--out`` left behind. Python API cases check for a :class:`NaspruneError` naming the
problem. The module-level data (checkpoints, configs, image trees) is built once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nasprune
from nasprune.cli import main
from nasprune.errors import NaspruneError
from nasprune.search import Budget, SearchSpace


def _edit_spec(directory: Path, edit) -> None:
    spec = directory / "spec.json"
    doc = json.loads(spec.read_text())
    edit(doc)
    spec.write_text(json.dumps(doc))


def _write_images(root: Path, classes: list[str], n: int, size: int = 8) -> None:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                root / c / f"{i}.png")


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    """Every broken file the cases below point at, built once."""
    d = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    model = nasprune.create_model("digitscnn", in_channels=1, width=8)
    nasprune.save(model, d / "ck", meta={"input_shape": [1, 8, 8], "data": "digits"})

    # checkpoints broken in different ways (copies of the good one)
    for name in ("tampered", "truncated", "evilspec", "othermodel", "unknownmodel",
                 "notjson", "escape", "noweights"):
        shutil.copytree(d / "ck", d / name)
    raw = bytearray((d / "tampered" / "weights.safetensors").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (d / "tampered" / "weights.safetensors").write_bytes(bytes(raw))
    full = (d / "truncated" / "weights.safetensors").read_bytes()
    (d / "truncated" / "weights.safetensors").write_bytes(full[: len(full) // 2])
    _edit_spec(d / "evilspec", lambda doc: doc["spec"]["modules"]["features.0"].update(
        type="subprocess.Popen"))
    _edit_spec(d / "othermodel", lambda doc: doc["arch"].update(
        name="lenet5", kwargs={"num_classes": 10, "in_channels": 1}))
    _edit_spec(d / "unknownmodel", lambda doc: doc["arch"].update(name="resnet57"))
    (d / "notjson" / "spec.json").write_text("{'format': nasprune")
    _edit_spec(d / "escape", lambda doc: doc["weights"].update(file="../ck/weights.safetensors"))
    (d / "noweights" / "weights.safetensors").unlink()

    # configs
    (d / "malformed.yaml").write_text("train:\n  epochs: [1, 2\n  lr: 0.1\n")
    (d / "unknown-key.yaml").write_text("train:\n  epoch: 3\n")
    (d / "wrong-type.yaml").write_text("train:\n  epochs: three\n")
    (d / "nan.yaml").write_text("train:\n  lr: .nan\n")
    (d / "python-tag.yaml").write_text("train: !!python/object/apply:os.system ['true']\n")
    (d / "list.yaml").write_text("- epochs\n- 3\n")
    (d / "binary.yaml").write_bytes(b"\xff\xfe\x00train: 1\n")
    (d / "search-typo.yaml").write_text("search:\n  trails: 3\n")
    nasprune.save(model, d / "nodata")  # records no data set

    # ratios files
    (d / "r-unknown.json").write_text(json.dumps({"features.00": 0.5}))
    (d / "r-range.json").write_text(json.dumps({"features.0": 1.5}))
    (d / "r-nan.json").write_text('{"features.0": NaN}')
    (d / "r-string.json").write_text(json.dumps({"features.0": "half"}))
    (d / "r-list.json").write_text("[0.5, 0.5]")
    (d / "r-broken.json").write_text('{"features.0": 0.5')

    # image trees: a class missing from test/, an unreadable image, an RGB tree
    _write_images(d / "tree-missing" / "train", ["cat", "dog"], 2)
    _write_images(d / "tree-missing" / "test", ["cat"], 2)
    _write_images(d / "tree-corrupt" / "train", ["cat", "dog"], 2)
    _write_images(d / "tree-corrupt" / "test", ["cat", "dog"], 1)
    (d / "tree-corrupt" / "train" / "dog" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    _write_images(d / "tree-rgb" / "train", ["cat", "dog"], 4)
    _write_images(d / "tree-rgb" / "test", ["cat", "dog"], 2)
    (d / "tree-empty" / "train" / "cat").mkdir(parents=True)
    return d


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NASPRUNE_CACHE_DIR", str(tmp_path / "cache"))


def assert_cli_error(capsys, argv: list[str], needles: tuple[str, ...],
                     out: Path | None = None) -> str:
    """Exit code 2, one ``error:`` line containing every needle, no traceback, no output."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects malformed flags itself (also exit 2)
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in captured.out
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    # A NaspruneError is the whole of stderr; argparse adds only its usage line.
    assert all(line.startswith(("error:", "usage:", " ")) for line in lines), err
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    if out is not None:
        assert not out.exists(), f"{out} was written by a failed command"
        leftovers = [p.name for p in out.parent.glob(f"*{out.name}*tmp*")]
        assert not leftovers, leftovers
    return errors[0]


# (id, argv with {d} = fixture dir and {out} = output path, needles in the error line)
TRAIN = ["train", "--quiet", "--out", "{out}"]
PRUNE = ["prune", "--checkpoint", "{d}/ck", "--out", "{out}"]
EVAL = ["evaluate", "--data", "digits", "--out", "{out}"]
SEARCH = ["search", "--checkpoint", "{d}/ck", "--trials", "2", "--val-size", "32",
          "--bn-batches", "1", "--quiet", "--out", "{out}.json"]

CASES = [
    # --- configs and flags
    ("yaml-malformed", [*TRAIN, "--config", "{d}/malformed.yaml"],
     ("malformed YAML", "malformed.yaml", "line 3")),
    ("yaml-unknown-key", [*TRAIN, "--config", "{d}/unknown-key.yaml"],
     ("unknown key 'epoch'", "did you mean 'epochs'")),
    ("yaml-wrong-type", [*TRAIN, "--config", "{d}/wrong-type.yaml"],
     ("train.epochs", "integer", "'three'")),
    ("yaml-nan", [*TRAIN, "--config", "{d}/nan.yaml"], ("train.lr", "finite")),
    ("yaml-python-tag", [*TRAIN, "--config", "{d}/python-tag.yaml"],
     ("python-tag.yaml", "python/object")),
    ("yaml-not-mapping", [*TRAIN, "--config", "{d}/list.yaml"], ("mapping", "list")),
    ("yaml-binary", [*TRAIN, "--config", "{d}/binary.yaml"], ("binary.yaml",)),
    ("config-missing", [*TRAIN, "--config", "{d}/nowhere.yaml"],
     ("nowhere.yaml", "does not exist")),
    ("flag-negative-epochs", ["train", "--quiet", "--epochs", "-3", "--out", "{out}"],
     ("epochs", "≥ 0", "-3")),
    ("flag-nan-lr", [*TRAIN, "--lr", "nan"], ("lr", "finite", "nan")),
    ("flag-negative-lr", [*TRAIN, "--lr", "-0.1"], ("lr", "> 0")),
    ("flag-momentum-range", [*TRAIN, "--momentum", "1.5"], ("momentum", "< 1")),
    ("flag-not-a-number", [*TRAIN, "--lr", "fast"], ("--lr", "invalid float value")),
    ("unknown-model", [*TRAIN, "--model", "resnet"], ("unknown model 'resnet'", "did you mean")),
    ("name-with-newline", [*TRAIN, "--model", "res\nnet56"], ("unknown model 'res\\nnet56'",)),
    ("data-name-with-newline", [*EVAL, "--checkpoint", "{d}/ck", "--data", "dig\nits"],
     ("unknown data set 'dig\\nits'",)),
    ("unknown-optimizer", [*TRAIN, "--optimizer", "adamm"], ("'adamm'", "did you mean 'adam'")),
    ("unknown-schedule", [*TRAIN, "--schedule", "cosin"], ("'cosin'", "did you mean 'cosine'")),
    ("unknown-device", [*TRAIN, "--device", "tpu"], ("device 'tpu'",)),
    ("threads-zero", [*TRAIN, "--threads", "0"], ("--threads", "at least 1")),
    # --- data
    ("unknown-data", [*EVAL[:1], "--checkpoint", "{d}/ck", "--data", "digitz", "--out", "{out}"],
     ("unknown data set 'digitz'", "did you mean 'digits'")),
    ("data-dir-missing", [*TRAIN, "--data", "imagefolder", "--data-dir", "{d}/nowhere"],
     ("nowhere", "does not exist")),
    ("data-class-missing", [*TRAIN, "--data", "imagefolder", "--data-dir", "{d}/tree-missing"],
     ("class 'dog'", "test/")),
    ("data-unreadable-image", [*TRAIN, "--data", "imagefolder", "--data-dir",
                               "{d}/tree-corrupt"], ("cannot read image", "bad.png")),
    ("data-no-images", [*TRAIN, "--data", "imagefolder", "--data-dir", "{d}/tree-empty"],
     ("no images",)),
    ("data-shape-mismatch", ["evaluate", "--checkpoint", "{d}/ck", "--data", "imagefolder",
                             "--data-dir", "{d}/tree-rgb", "--out", "{out}"],
     ("does not accept", "(3, 32, 32)")),
    # --- checkpoints
    ("checkpoint-missing", [*EVAL, "--checkpoint", "{d}/nowhere"], ("nowhere",)),
    ("checkpoint-tampered", [*EVAL, "--checkpoint", "{d}/tampered"], ("sha256",)),
    ("checkpoint-truncated", [*EVAL, "--checkpoint", "{d}/truncated"], ("truncated",)),
    ("checkpoint-python-class", [*EVAL, "--checkpoint", "{d}/evilspec"],
     ("subprocess.Popen", "not an allowed layer type")),
    ("checkpoint-other-model", [*EVAL, "--checkpoint", "{d}/othermodel"],
     ("different model",)),
    ("checkpoint-unknown-model", [*EVAL, "--checkpoint", "{d}/unknownmodel"],
     ("resnet57", "did you mean")),
    ("checkpoint-spec-not-json", [*EVAL, "--checkpoint", "{d}/notjson"], ("not valid JSON",)),
    ("checkpoint-path-escape", [*EVAL, "--checkpoint", "{d}/escape"], ("weights",)),
    ("checkpoint-no-weights", [*EVAL, "--checkpoint", "{d}/noweights"],
     ("weights.safetensors",)),
    ("batch-size-zero", [*EVAL, "--checkpoint", "{d}/ck", "--batch-size", "0"], ("batch",)),
    # --- prune
    ("ratio-out-of-range", [*PRUNE, "--ratio", "1.5"], ("prune ratio", "[0, 1)", "1.5")),
    ("ratio-negative", [*PRUNE, "--ratio", "-0.2"], ("prune ratio", "-0.2")),
    ("ratio-nan", [*PRUNE, "--ratio", "nan"], ("prune ratio", "nan")),
    ("ratios-unknown-group", [*PRUNE, "--ratios", "{d}/r-unknown.json"],
     ("features.00", "features.0")),
    ("ratios-out-of-range", [*PRUNE, "--ratios", "{d}/r-range.json"], ("features.0", "1.5")),
    ("ratios-nan", [*PRUNE, "--ratios", "{d}/r-nan.json"], ("features.0", "nan")),
    ("ratios-string", [*PRUNE, "--ratios", "{d}/r-string.json"], ("features.0", "'half'")),
    ("ratios-list", [*PRUNE, "--ratios", "{d}/r-list.json"], ("JSON object",)),
    ("ratios-broken-json", [*PRUNE, "--ratios", "{d}/r-broken.json"], ("r-broken.json",)),
    ("ratios-missing", [*PRUNE, "--ratios", "{d}/r-none.json"], ("r-none.json", "not found")),
    ("global-one", [*PRUNE, "--global", "1.0"], ("global_target", "1.0")),
    ("unknown-criterion", [*PRUNE, "--ratio", "0.5", "--criterion", "l3"],
     ("unknown pruning criterion 'l3'",)),
    ("round-to-zero", [*PRUNE, "--ratio", "0.5", "--round-to", "0"], ("round_to",)),
    ("ignore-unknown-layer", [*PRUNE, "--ratio", "0.5", "--ignore", "features.99"],
     ("features.99",)),
    ("input-shape-mismatch", [*PRUNE, "--ratio", "0.5", "--input-shape", "3,32,32"],
     ("(3, 32, 32)",)),
    ("input-shape-garbage", [*PRUNE, "--ratio", "0.5", "--input-shape", "1,eight,8"],
     ("--input-shape", "1,eight,8")),
    ("sparsity-out-of-range", [*PRUNE, "--threshold-sparsity", "2"], ("sparsity", "2.0")),
    ("prune-onto-itself", ["prune", "--checkpoint", "{d}/ck", "--ratio", "0.5",
                           "--out", "{d}/ck"], ("--out",)),
    ("prune-bad-checkpoint", ["prune", "--checkpoint", "{d}/tampered", "--ratio", "0.5",
                              "--out", "{out}"], ("sha256",)),
    # --- search
    ("search-infeasible-budget", [*SEARCH, "--target-macs", "0.001"],
     ("budget cannot be met", "0.1%")),
    ("search-budget-nan", [*SEARCH, "--target-macs", "nan"], ("target_macs", "finite")),
    ("search-budget-above-one", [*SEARCH, "--target-macs", "1.5"], ("target_macs", "1.5")),
    ("search-latency-negative", [*SEARCH, "--target-latency-ms", "-3"],
     ("target_latency_ms", "-3")),
    ("search-unknown-strategy", [*SEARCH, "--strategy", "evolutoin"],
     ("'evolutoin'", "did you mean 'evolution'")),
    ("search-option-malformed", [*SEARCH, "--option", "population"], ("KEY=VALUE",)),
    ("search-option-unknown", [*SEARCH, "--strategy", "evolution", "--option",
                               "populaton=3"], ("'populaton'", "did you mean 'population'")),
    ("search-option-for-random", [*SEARCH, "--strategy", "random", "--option", "warmup=3"],
     ("unknown option 'warmup'", "takes no options")),
    ("search-option-bad-value", [*SEARCH, "--strategy", "evolution", "--option",
                                 "population=abc"], ("population", "'abc'")),
    ("search-trials-zero", [*SEARCH, "--trials", "0"], ("trials", "≥ 1")),
    ("search-storage-scheme", [*SEARCH, "--storage", "ftp://host/x.db"],
     ("unsupported storage 'ftp'",)),
    ("search-storage-unreachable", [*SEARCH, "--storage",
                                    "postgresql://u:pw@127.0.0.1:1/x"],
     ("cannot open storage", "u:***@", "refused")),
    ("search-storage-dir-missing", [*SEARCH, "--storage", "sqlite:///{d}/nowhere/s.db"],
     ("nowhere", "does not exist")),
    ("search-empty-study-name", [*SEARCH, "--study", ""], ("study name",)),
    ("search-keep-bounds", [*SEARCH, "--min-keep", "0.9", "--max-keep", "0.5"],
     ("min_keep", "max_keep")),
    ("search-config-typo", [*SEARCH, "--config", "{d}/search-typo.yaml"],
     ("unknown key 'trails'", "did you mean 'trials'")),
    ("search-model-and-checkpoint", [*SEARCH, "--model", "digitscnn"],
     ("exactly one of --model NAME or --checkpoint DIR",)),
    ("search-no-data-recorded", ["search", "--checkpoint", "{d}/nodata", "--quiet",
                                 "--out", "{out}.json"], ("--data NAME",)),
    ("search-out-not-json", ["search", "--checkpoint", "{d}/ck", "--out", "{out}.txt"],
     (".json",)),
    ("search-unknown-device", [*SEARCH, "--device", "tpu"], ("device 'tpu'",)),
    ("search-shape-mismatch", [*SEARCH, "--data", "imagefolder", "--data-dir", "{d}/tree-rgb"],
     ("forward failed", "3 channels")),
    ("search-tampered-checkpoint", ["search", "--checkpoint", "{d}/tampered", "--quiet",
                                    "--out", "{out}.json"], ("sha256",)),
]


@pytest.mark.parametrize("argv, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_rejects_bad_input(w, tmp_path, capsys, argv, needles):
    out = tmp_path / "out"
    argv = [a.format(d=w, out=out) for a in argv]
    target = Path(argv[argv.index("--out") + 1])
    assert_cli_error(capsys, argv, needles, out=None if target == w / "ck" else target)
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["cache"])  # nothing written


def test_enough_distinct_bad_inputs():
    assert len({c[0] for c in CASES}) == len(CASES) >= 25
    assert len({c[0] for c in API_CASES}) == len(API_CASES)


def test_failed_prune_leaves_the_source_checkpoint_intact(w, tmp_path, capsys):
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (w / "ck").iterdir()}
    assert_cli_error(capsys, ["prune", "--checkpoint", str(w / "ck"), "--ratio", "0.5",
                              "--out", str(w / "ck")], ("--out",))
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (w / "ck").iterdir()}
    assert before == after


def test_diverging_training_is_one_error_line(tmp_path, capsys):
    """A learning rate that blows the loss up is reported, and no checkpoint is written."""
    out = tmp_path / "run"
    line = assert_cli_error(capsys, ["train", "--quiet", "--epochs", "2", "--lr", "1e30",
                                     "--optimizer", "sgd", "--out", str(out)],
                            ("diverged",), out=out)
    assert "nan" in line or "inf" in line


# --------------------------------------------------------------------------- Python API


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return nasprune.create_model("digitscnn", in_channels=1, width=8)


X = torch.zeros(1, 1, 8, 8)


API_CASES = [
    ("create-unknown-option", lambda m, d, t: nasprune.create_model("digitscnn", widht=8),
     "no option 'widht'.*did you mean 'width'"),
    ("create-bad-classes", lambda m, d, t: nasprune.create_model("lenet5", num_classes=1),
     "num_classes"),
    ("budget-nan", lambda m, d, t: Budget(macs=float("nan")), "macs"),
    ("budget-negative", lambda m, d, t: Budget(params=-0.5), "params"),
    ("budget-above-one", lambda m, d, t: Budget(macs=1.5), r"\(0, 1\]"),
    ("budget-empty", lambda m, d, t: Budget(), "at least one"),
    ("budget-infeasible", lambda m, d, t: SearchSpace(m, X, min_keep=0.9).check_feasible(
        Budget(macs=0.1)), "cannot be met"),
    ("space-min-keep", lambda m, d, t: SearchSpace(m, X, min_keep=0.0), "min_keep"),
    ("prune-int-key", lambda m, d, t: nasprune.prune(m, X, {0: 0.5}), "no prunable group"),
    ("prune-wrong-input", lambda m, d, t: nasprune.prune(m, torch.zeros(1, 3, 32, 32), 0.5),
     "forward failed"),
    ("prune-string-ratio", lambda m, d, t: nasprune.prune(m, X, "half"), "'half'"),
    ("evaluate-wrong-data", lambda m, d, t: nasprune.evaluate(
        nasprune.create_model("lenet5"), d), r"does not accept inputs of shape \(1, 8, 8\)"),
    ("fit-wrong-data", lambda m, d, t: nasprune.fit(
        nasprune.create_model("lenet5"), d, epochs=1, progress=False), "cannot process"),
    ("fit-nan-lr", lambda m, d, t: nasprune.fit(m, d, epochs=1, lr=float("nan"),
                                                progress=False), "lr"),
    ("load-for-other-model", lambda m, d, t: nasprune.load(
        nasprune.save(m, t / "ck"), base=nasprune.create_model("lenet5", in_channels=1)),
     "different model"),
]


@pytest.mark.parametrize("call, pattern", [c[1:] for c in API_CASES],
                         ids=[c[0] for c in API_CASES])
def test_api_rejects_bad_input(call, pattern, model, digits, tmp_path):
    with pytest.raises(NaspruneError, match=pattern):
        call(model, digits, tmp_path)


# ------------------------------------------------------------------- search (Python API)

def _search(model, data, **kw):
    from nasprune.search import search

    args = {"strategy": "random", "trials": 1, "progress": False, "val_size": 64,
            "bn_batches": 1, "device": "cpu", **kw}
    return search(model, X, data, **args)


SEARCH_CASES = [
    ("unknown-strategy", {"strategy": "evolutoin"}, "did you mean 'evolution'"),
    ("infeasible-budget", {"target": Budget(macs=0.001)}, "cannot be met"),
    ("unknown-strategy-option", {"strategy": "evolution", "populaton": 4},
     "unknown option 'populaton'.*did you mean 'population'"),
    ("trials-zero", {"trials": 0}, "trials must be a positive integer"),
    ("objective", {"objective": "pareto"}, "objective must be 'single' or 'multi'"),
    ("target-not-budget", {"target": 0.5}, "nasprune.Budget"),
    ("storage-scheme", {"storage": "ftp://host/x.db"}, "unsupported storage 'ftp'"),
    ("storage-not-url", {"storage": "runs/x.db"}, "database URL"),
    ("storage-dir-missing", {"storage": "sqlite:////nonexistent-nasprune-dir/x.db"},
     "nonexistent-nasprune-dir.*does not exist"),
    ("study-name-empty", {"storage": "sqlite:///{tmp}/s.db", "study": "  "}, "study name"),
]


@pytest.mark.parametrize("kw, pattern", [c[1:] for c in SEARCH_CASES],
                         ids=[c[0] for c in SEARCH_CASES])
def test_search_rejects_bad_input(kw, pattern, model, digits, tmp_path):
    kw = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kw.items()}
    with pytest.raises(NaspruneError, match=pattern):
        _search(model, digits, **kw)
    assert not (tmp_path / "s.db").exists() or "study" in kw


def test_unreachable_storage_is_one_line_without_the_password(model, digits, recwarn):
    with pytest.raises(NaspruneError) as info:
        _search(model, digits, storage="postgresql://nasprune:s3cret@127.0.0.1:1/db")
    msg = str(info.value)
    assert msg.startswith("cannot open storage postgresql://nasprune:***@127.0.0.1:1/db")
    assert "s3cret" not in msg and "\n" not in msg and "refused" in msg
    # opening a storage warns about nothing (deprecated optuna names print on stderr)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


def test_resuming_a_study_with_another_budget_is_refused(model, digits, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    first = _search(model, digits, storage=url, study="s", target=Budget(macs=0.5))
    assert len(first.trials) == 1
    with pytest.raises(NaspruneError, match="different budget.*another study name"):
        _search(model, digits, storage=url, study="s", target=Budget(macs=0.3), trials=2)
    with pytest.raises(NaspruneError, match="objective"):
        _search(model, digits, storage=url, study="s", objective="multi", trials=2)
    # the refused calls added nothing
    import optuna

    assert len(optuna.load_study(study_name="s", storage=url).trials) == 1


# ------------------------------------------------------------------- never unpickle

def test_source_never_unpickles():
    """No code path can unpickle a downloaded file: ``torch.load`` only with
    ``weights_only=True``, no ``pickle.load(s)``/``numpy.load(allow_pickle=True)``/
    ``torch.jit.load``, and the pickle module only in the restricted CIFAR unpickler."""
    import ast

    root = Path(nasprune.__file__).parent
    problems, pickle_users = [], set()
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib")
                       for n in names):
                    pickle_users.add(rel)
            if not isinstance(node, ast.Call):
                continue
            call = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if call.endswith("torch.load") and kw.get("weights_only") != "True":
                problems.append(f"{rel}:{node.lineno} torch.load without weights_only=True")
            if call in ("pickle.load", "pickle.loads", "torch.jit.load"):
                problems.append(f"{rel}:{node.lineno} {call}")
            if call.endswith(("np.load", "numpy.load")) and kw.get("allow_pickle") == "True":
                problems.append(f"{rel}:{node.lineno} {call}(allow_pickle=True)")
    assert problems == []
    assert pickle_users == {"data/pickles.py"}  # the allow-listed CIFAR batch reader

