"""fastvae.evaluate as a package: every name of the former module fastvae/evaluate.py is still there, each
job in its own file, and the checks that fastvae.plots uses are public."""

import importlib

import fastvae.evaluate
import fastvae.plots

FORMER_NAMES = ("evaluate_likelihood", "evaluate_generation", "evaluate_random_responses", "evaluate_echo_responses",
                "generate_texts", "posterior_parameters", "split_by_seen", "write_report", "default_strategy",
                "ACTIVE_UNITS_THRESHOLD", "LOG_2PI")
HOMES = {"likelihood": ("evaluate_likelihood", "posterior_parameters", "ACTIVE_UNITS_THRESHOLD", "LOG_2PI"),
         "generation": ("evaluate_generation", "generate_texts", "default_strategy"),
         "baselines": ("evaluate_random_responses", "evaluate_echo_responses"),
         "scoring": ("split_by_seen",),
         "report": ("write_report",)}


def test_every_former_name_is_importable_from_fastvae_evaluate():
    for name in FORMER_NAMES:
        assert hasattr(fastvae.evaluate, name), name
    assert set(fastvae.evaluate.__all__) == set(FORMER_NAMES)


def test_each_name_has_one_home():
    for module, names in HOMES.items():
        home = importlib.import_module(f"fastvae.evaluate.{module}")
        for name in names:
            assert getattr(fastvae.evaluate, name) is getattr(home, name), name
    assert sorted(n for names in HOMES.values() for n in names) == sorted(FORMER_NAMES)


def test_plots_checks_its_arguments_with_the_public_checks():
    from fastvae.evaluate import checks

    assert fastvae.plots.check_model is checks.check_model and fastvae.plots.check_dataset is checks.check_dataset
