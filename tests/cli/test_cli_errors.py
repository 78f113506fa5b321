"""The robustness application's messages (``localnorm.experiments._errors``) and the
CLI's I/O message follow the project's template (what is wrong, expected, ``Received:``,
how to fix it); they are raised as LocalNormError, which the CLI prints as one line."""

from __future__ import annotations

from localnorm import LocalNormError, _errors
from localnorm.experiments import _cli
from localnorm.experiments import _errors as app_errors


def _sample_args():
    """One call per message builder of the application; a builder missing here fails."""
    return {
        "dataset_files_missing": [("mnist", "/nowhere", "t10k-images-idx3-ubyte(.gz)")],
        "test_dir_missing": [("/nowhere/test",)],
        "bad_dataset_file": [("/x.gz", "truncated", "an IDX file")],
        "bad_corruption_severity": [("contrast", 7)],
        "bad_levels": [("agn=", "empty list")],
        "adapter_missing": [("localnorm", "keras", "localnorm.keras")],
        "resume_mismatch": [("/out", "seed", 0, 1)],
        "image_too_small": [("vgg19", (1, 8, 8), 32)],
        "model_not_in_backend": [("vgg19", "keras", ("mnistnet", "resnet"))],
        "bad_group_list": [([4, 4], 64, "some K appear twice")],
        "seed_runs_differ": [("epochs", [8, 2])],
        "too_few_for_groups": [("test split", 3, 4, 4)],
        "bench_suite_missing": [("/site-packages/benchmarks",)],
        "backend_not_installed": [("flax", "flax", "flax")],
        "bad_confusion": [("agn=3", "the levels of 'agn' in this run are ['1', '2']")],
        "device_unavailable": [("cuda:1", "flax", ["auto", "cpu:0"])],
        "bad_option": [("--groups", 0, "an int >= 1",
                        "pass K >= 1 groups along the batch axis")],
        "out_not_writable": [("/out", "it is a file")],
        "bad_results_file": [("/out/results.json", "not valid JSON")],
        "bad_checkpoint": [("/out/checkpoints/localnorm.pt", "truncated")],
    }


def test_every_message_follows_the_template():
    table = _sample_args()
    builders = _errors.builders(app_errors)
    assert set(builders) == set(table), f"add sample args for: {set(builders) ^ set(table)}"
    for name, calls in table.items():
        for args in calls:
            e = builders[name](*args)
            assert isinstance(e, LocalNormError), name
            assert not _errors.template_problems(str(e)), (name, str(e))


def test_the_io_message_follows_the_template():
    for exc in (PermissionError(13, "Permission denied", "/out/x"), OSError("disk")):
        text = str(_cli.file_error(exc))
        assert not _errors.template_problems(text), text
    assert "'/out/x'" in str(_cli.file_error(PermissionError(13, "Permission denied", "/out/x")))
