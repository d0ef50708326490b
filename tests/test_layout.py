"""The package layout holds: imports run one way, from `pipelines`/`jobs` down to the bottom
packages, and no module imports itself back through others (read from the source, function-level
imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the project packages it may import (besides itself)
ALLOWED = {
    "losatok_storage": set(),
    "losatok": set(),
    "raycluster": set(),
    "losatok_data": {"losatok_storage"},
    "losatok_input": {"losatok_storage", "losatok_data", "losatok"},
    "pipelines": {"losatok_storage", "losatok_data", "losatok_input", "losatok", "raycluster"},
    "jobs": {"losatok_storage", "losatok_data", "losatok_input", "losatok", "raycluster"},
    "schemas": {"losatok_data", "losatok_storage", "losatok_input"},  # the deprecated aliases
}
# the one-release aliases of moved names (a module `__getattr__` that warns): not a dependency
DEPRECATED_ALIASES = {
    ("losatok.audio", "losatok_input.decoder"),
    ("losatok.checkpoint", "losatok.loading"),
}
# third-party packages a bottom package must not need
FORBIDDEN_THIRD_PARTY = {
    "losatok_storage": {"torch", "torchaudio", "torchcodec", "numpy", "ray"},
    "losatok_data": {"torch", "torchaudio", "torchcodec", "ray"},
    "losatok": {"ray", "fsspec", "s3fs"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for package in ALLOWED
        for path in sorted((ROOT / package).rglob("*.py"))
        if "conf" not in path.parts
    }


def imports_of(path: Path, name: str) -> set[str]:
    """Absolute names of every module `path` imports, anywhere in it."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + [base]
                ).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {
        name: {m for m in imports_of(path, name) if m in modules and (name, m) not in DEPRECATED_ALIASES}
        for name, path in modules.items()
    }


def test_imports_run_down_the_layers(graph):
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for target in targets
        if (top := target.split(".")[0]) != module.split(".")[0]
        and top not in ALLOWED[module.split(".")[0]]
        and (module, target) not in DEPRECATED_ALIASES
    ]
    assert not wrong, wrong


def test_bottom_packages_stay_light():
    wrong = []
    for package, banned in FORBIDDEN_THIRD_PARTY.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            if name.endswith(".testing"):
                continue
            heavy = {m.split(".")[0] for m in imports_of(path, name)} & banned
            wrong += [f"{name} imports {m}" for m in sorted(heavy)]
    assert not wrong, wrong


def test_no_module_imports_itself_back(graph):
    """No cycle among modules (Tarjan's strongly connected components, none larger than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, cycles


def test_the_old_import_paths_still_work_with_a_warning():
    import losatok
    import losatok_data.reader
    import losatok_input.decoder

    with pytest.warns(DeprecationWarning, match="losatok_data.reader"):
        import schemas.reader
    assert schemas.reader.open_dataset is losatok_data.reader.open_dataset
    with pytest.warns(DeprecationWarning, match="losatok_input.decoder.load_audio"):
        assert losatok.load_audio is losatok_input.decoder.load_audio
    with pytest.warns(DeprecationWarning, match="losatok_storage.filesystem"):
        from schemas.storage import url_to_fs  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from losatok import LoSATok  # noqa: F401  (what stayed imports without a warning)


def test_the_tokenize_driver_starts_without_torch():
    """The driver plans, starts Ray and commits nothing itself: torch (1.5 s to import) loads only
    in the processes that decode and encode, so every `losatok-tokenize` starts that much sooner."""
    probe = (
        "import sys, pipelines.tokenize, pipelines.run, pipelines.dataflow, pipelines.sink, losatok; "
        "losatok.preset('tiny'); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]"
    check = "import losatok; print(losatok.LoSATok.__name__, losatok.collate_waveforms.__module__)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["LoSATok", "losatok.audio"]  # the lazy names still resolve
