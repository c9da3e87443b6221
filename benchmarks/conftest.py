"""Benchmark session: options, the engine/model matrix, shared measurements and the summary.

Options (README "Benchmarks" and docs/benchmarks.md): ``--provider`` (repeatable or comma list; default: every
provider that works here), ``--full`` (paper-size networks, batches 1 and 4, the 512x512x300 memory
run, all speed gates; tests marked ``slow``), ``--results-dir`` (default ``benchmark-results``),
``--bench-cache`` (exported models; default ``~/.cache/limbseg-rt``), ``--demo-models`` (folder of
bundled-style ``{arch}-{precision}.onnx``; default the package's bundled models).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the _harness helpers live beside this file

from _results import Results, write_outputs  # noqa: E402

# (provider, precision): engines in the matrix. pytorch is the reference, not a provider.
ENGINE_KEYS = (
    ("pytorch", "fp32"),
    ("cpu", "fp32"),
    ("cpu", "int8"),
    ("openvino", "fp32"),
    ("openvino", "int8"),
    ("openvino", "bf16"),  # the fp32 file compiled in bf16; only on a CPU with AVX512-BF16 or AMX-BF16
    ("cuda", "fp32"),
    ("cuda", "fp16"),
    ("tensorrt", "fp16"),
)
PROVIDERS = ("cpu", "openvino", "cuda", "tensorrt")
QUICK_MODELS = ("small-unet",)
FULL_MODELS = ("unet", "attention-unet", "sc-unet")
RESULTS_KEY = pytest.StashKey[Results]()


def pytest_addoption(parser):
    g = parser.getgroup("limbseg-rt benchmarks")
    g.addoption(
        "--provider",
        action="append",
        default=None,
        help="execution provider(s) to benchmark: cpu, openvino, cuda, tensorrt (repeat or comma "
        "list); default: all that work on this machine",
    )
    g.addoption(
        "--full",
        action="store_true",
        default=False,
        help="full benchmark: paper-size networks, batches 1 and 4, 512x512x300 memory run, all gates",
    )
    g.addoption("--results-dir", default="benchmark-results", help="folder for summary.md, summary.json, chart.png")
    g.addoption(
        "--bench-cache",
        default=None,
        help="cache root for exported benchmark models (default: $XDG_CACHE_HOME/limbseg-rt or ~/.cache/limbseg-rt)",
    )
    g.addoption(
        "--record-auto-run",
        default=None,
        help="write the auto-config gate's measurements to this JSON file (a fixture for "
        "benchmarks/test_bench_isa_gates.py); '{model}' in the name is replaced by the model's name",
    )
    g.addoption(
        "--demo-models", default=None, help="folder of {arch}-{fp32,int8}.onnx demo models (default: the bundled ones)"
    )


def pytest_configure(config):
    import os

    from limbseg_rt.runtime.engine.providers import default_threads

    res = Results()
    from limbseg_rt.runtime.engine.cpu import detect

    info = detect()
    res.machine = {
        "cpus": default_threads(),
        "cpu_model": info.model,
        "isa": info.isa,
        "isa_flags": info.to_dict()["flags"],
        "load_start": os.getloadavg()[0],
    }
    config.stash[RESULTS_KEY] = res


def _is_full(config) -> bool:
    return bool(config.getoption("--full", default=False))


def selected_providers(config) -> dict[str, str | None]:
    """provider -> None if it will be benchmarked, else the reason it is skipped."""
    from limbseg_rt.runtime.engine.providers import probe_providers

    probe = probe_providers()
    asked = config.getoption("--provider")
    wanted = None
    if asked:
        wanted = {p.strip().lower() for a in asked for p in a.split(",") if p.strip()}
        unknown = wanted - set(PROVIDERS)
        if unknown:
            raise pytest.UsageError(f"--provider {', '.join(sorted(unknown))}: unknown; use {', '.join(PROVIDERS)}")
    out = {}
    for p in PROVIDERS:
        ok, detail = probe.get(p, (False, "not installed in this environment"))
        if wanted is not None and p not in wanted:
            out[p] = f"{p} not selected (--provider {','.join(sorted(wanted))})"
        elif not ok:
            out[p] = f"{p} unavailable here: {detail}"
        else:
            out[p] = None
    return out


def pytest_generate_tests(metafunc):
    full = _is_full(metafunc.config)
    if "model_name" in metafunc.fixturenames:
        names = list(FULL_MODELS if full else QUICK_MODELS)
        if "demo_ok" in metafunc.fixturenames:
            names += demo_names(metafunc.config)
        metafunc.parametrize("model_name", names, scope="session")
    if "demo_name" in metafunc.fixturenames:
        demos = demo_names(metafunc.config)
        metafunc.parametrize(
            "demo_name",
            demos
            or [
                pytest.param(
                    "demo",
                    marks=pytest.mark.skip(
                        reason="no bundled demo models found (runtime/data/models/ or --demo-models): accuracy of trained "
                        "models cannot be judged"
                    ),
                )
            ],
        )
    if "engine_key" in metafunc.fixturenames:
        metafunc.parametrize("engine_key", list(ENGINE_KEYS), ids=[f"{p}-{q}" for p, q in ENGINE_KEYS])
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", [1, 4] if full else [1])


def demo_names(config) -> list[str]:
    """``demo <arch>`` for each architecture with a bundled (trained) model file."""
    from limbseg_rt.runtime.model.bundled import list_bundled

    d = config.getoption("--demo-models")
    archs = []
    for m in list_bundled(Path(d) if d else None):
        if m.arch not in archs:
            archs.append(m.arch)
    return [f"demo {a}" for a in archs]


@pytest.fixture
def demo_ok():
    """Marker fixture: this test also runs on the bundled demo models."""
    return True


@pytest.fixture(scope="session")
def full_run(pytestconfig) -> bool:
    return _is_full(pytestconfig)


@pytest.fixture(scope="session")
def results(pytestconfig) -> Results:
    return pytestconfig.stash[RESULTS_KEY]


@pytest.fixture(scope="session")
def provider_skips(pytestconfig) -> dict[str, str | None]:
    return selected_providers(pytestconfig)


@pytest.fixture(scope="session")
def cache_root(pytestconfig) -> Path:
    from limbseg_rt.runtime.engine.providers import default_cache_root

    opt = pytestconfig.getoption("--bench-cache")
    return Path(opt).expanduser() if opt else default_cache_root()


@pytest.fixture(scope="session")
def cpu():
    """This machine's CPU: model, cores, the instruction sets that decide the speed gates."""
    from limbseg_rt.runtime.engine.cpu import detect

    return detect()


@pytest.fixture(scope="session")
def ceilings(results):
    """The machine's fp32 and int8 GEMM peaks, measured once at the start of the run."""
    from _ceilings import measure_ceilings

    c = measure_ceilings()
    results.ceilings = c
    return c


@pytest.fixture(scope="session")
def bench(pytestconfig, cache_root, provider_skips, results):
    """Session-wide models and engines (see ``_session.BenchSession``)."""
    from _session import BenchSession

    s = BenchSession(
        cache_root=cache_root,
        provider_skips=provider_skips,
        full=_is_full(pytestconfig),
        demo_dir=pytestconfig.getoption("--demo-models"),
        results=results,
    )
    yield s
    s.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    res = config.stash.get(RESULTS_KEY, None)
    if res is None or res.empty():
        return
    import os

    res.machine["load_end"] = os.getloadavg()[0]
    out = Path(config.getoption("--results-dir"))
    paths = write_outputs(res, out, full=_is_full(config))
    terminalreporter.section("limbseg-rt benchmark summary")
    terminalreporter.write_line(res.markdown())
    terminalreporter.write_line(f"written: {', '.join(str(p) for p in paths)}")


@pytest.fixture(autouse=True, scope="session")
def _private_precision_profile(tmp_path_factory):
    """Benchmarks judge the engines they build themselves, never the developer's `limbseg-rt tune`
    profile: --precision auto here follows the stated rule (docs/engines.md)."""
    import os

    old = os.environ.get("LIMBSEG_RT_CACHE")
    os.environ["LIMBSEG_RT_CACHE"] = str(tmp_path_factory.mktemp("limbseg-rt-cache"))
    yield
    if old is None:
        os.environ.pop("LIMBSEG_RT_CACHE", None)
    else:
        os.environ["LIMBSEG_RT_CACHE"] = old
