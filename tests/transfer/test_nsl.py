"""``experiment=nsl`` end to end: teacher on one corpus, graph over another, student trained with it."""

from __future__ import annotations

import json

from tests.conftest import run_train


def test_teacher_on_the_built_in_corpus_builds_a_graph_that_trains_a_student_on_another(
    default_corpus, tiny_manifest, cache_dir, tmp_path
):
    proc = run_train(
        "experiment=nsl",
        "data=manifest",
        f"data.manifest={tiny_manifest}",
        "model=mlp_2hl",
        "trainer.max_epochs=20",
        "quant.fixed_bits=[]",
        "transfer.k=3",
        cache_dir=cache_dir,
        run_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    transfer = results["transfer"]
    assert transfer["source"] == "synthetic" and transfer["teacher"]["source_test_acc"] > 0.5
    graph = transfer["graph"]
    assert graph["nodes"] == results["n_utterances"]["train"] == 70 and 0 < graph["edges"] <= 3 * 70
    assert graph["label_agreement"] > 2 * graph["chance_agreement"], "the teacher's embeddings group emotions"
    assert transfer["zero_shot"]["n"] == results["n_utterances"]["test"]
    assert results["baseline"]["test_acc"] > 0.3 and "laq" in results
    assert (tmp_path / "teacher" / "checkpoints" / "best.ckpt").exists()
    assert any((tmp_path / "tensorboard" / "teacher").glob("events.out.tfevents.*"))
