"""Contracts of the code's shape: the clinical package is plain Python and pandas, and `Records` come only
from validation or the store's loader (issue 19).

The clinical package is named once, in CLINICAL_PACKAGE: a rename changes that line only.
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dashboard.clinical.records.validate import NOT_BY_HAND, Records, RecordsConstructionError, validate
from tests.store_fixtures import GOOD_FILES, TODAY, write_folder

ROOT = Path(__file__).resolve().parents[2]
#: The pure clinical package (dotted name); its folder follows from it.
CLINICAL_PACKAGE = "dashboard.clinical"
#: What the clinical package never imports: screens, charts, the database and the web service stay outside.
FORBIDDEN = ("streamlit", "plotly", "sqlalchemy", "alembic", "fastapi", "starlette", "kaleido")
#: The only modules that may call the store route of Records (validation's route is private to records.py).
STORE_ROUTE_CALLERS = {"dashboard/store/loader.py"}


def package_dir(package: str = CLINICAL_PACKAGE) -> Path:
    return ROOT.joinpath(*package.split("."))


def imported_names(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in a module, at any depth (function-level imports too), relative
    imports resolved against `module`, and `importlib.import_module("…")` / `__import__("…")` with a literal."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            if node.module is None or name == module.split(".")[0]:  # `from . import x`, `from dashboard import x`
                found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, name))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
    return sorted(found)


def offences(folder: Path, package: str) -> list[str]:
    """'path:line imports name' for every forbidden import, and every import of the project from outside the
    package (which could bring a forbidden one in at call time)."""
    problems = []
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(folder).with_suffix("")
        parts = [p for p in relative.parts if p != "__init__"]
        module = ".".join([package, *parts]) if parts else package
        if path.name == "__init__.py":
            module += ".__init__"  # relative imports of a package resolve against the package itself
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        for line, name in imported_names(ast.parse(path.read_text(encoding="utf-8"), str(path)), module):
            top = name.split(".")[0]
            outside = top == package.split(".")[0] and not (name == package or name.startswith(package + "."))
            if top in FORBIDDEN or outside:
                problems.append(f"{where}:{line} imports {name}")
    return problems


def test_the_clinical_package_imports_no_screen_chart_database_or_web_library_in_any_module():
    assert package_dir().is_dir(), f"{CLINICAL_PACKAGE} is not at {package_dir()}: update CLINICAL_PACKAGE"
    assert len(list(package_dir().rglob("*.py"))) > 5
    assert offences(package_dir(), CLINICAL_PACKAGE) == []


def test_imported_in_a_fresh_interpreter_the_clinical_package_loads_none_of_them():
    """Every module of the package imported, then sys.modules asked: catches what a dependency brings in."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"package = importlib.import_module({CLINICAL_PACKAGE!r})\n"
        "for info in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(len(list(pkgutil.walk_packages(package.__path__))), *sorted({{m.split('.')[0] for m in sys.modules}}"
        f" & set({FORBIDDEN!r})))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    modules, *loaded = done.stdout.split()
    assert int(modules) > 5 and loaded == []


def test_the_import_check_finds_every_kind_of_import(tmp_path):
    """The checker itself: a module-level, a function-level, a relative-out-of-package and a dynamic import
    are each found; plain pandas and the package's own modules are not."""
    folder = tmp_path / "pkg"
    (folder / "sub").mkdir(parents=True)
    (folder / "__init__.py").write_text("from . import sub\n")
    (folder / "sub" / "__init__.py").write_text("")
    (folder / "clean.py").write_text("import pandas as pd\nfrom dashboard.core import grades\nfrom .sub import x\n")
    (folder / "sub" / "bad.py").write_text(
        "import plotly.express as px\n"
        "def later():\n    from sqlalchemy import select\n    import importlib\n"
        "    importlib.import_module('streamlit')\n"
        "from ... import store\n"
        "from dashboard.charts import cohort_chart\n")
    found = offences(folder, "dashboard.core")
    where = Path("pkg") / "sub" / "bad.py"
    assert [line.replace(str(tmp_path) + "/", "") for line in found] == [
        f"{where}:1 imports plotly.express", f"{where}:3 imports sqlalchemy",
        f"{where}:5 imports streamlit", f"{where}:6 imports dashboard.store", f"{where}:7 imports dashboard.charts"]


def test_no_folder_called_pages_switches_on_streamlits_legacy_multipage_mode():
    """A `pages/` folder beside the main script (dashboard/app/main.py) makes Streamlit run its files as pages,
    without app.py's sign-in, for requests that come together after a (re)start (issue 22.1): the screens live
    in dashboard/app/screens/. This check stands for the cause; tests/browser/test_browser.py starts one fresh
    server."""
    assert (ROOT / "dashboard" / "app" / "main.py").is_file()
    assert sorted(str(p.relative_to(ROOT)) for p in (ROOT / "dashboard").rglob("pages") if p.is_dir()) == []


# --------------------------------------------------------------------------------------- Records' routes
@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Records:
    records, report = validate(write_folder(tmp_path_factory.mktemp("records"), GOOD_FILES), today=TODAY)
    assert records is not None, report.error_lines()
    return records


def test_records_made_by_hand_are_refused_with_what_to_call_instead(validated):
    for attempt in (lambda: Records(**validated.frames(), extra_columns={}),
                    lambda: Records(validated.patients, validated.surgeries, validated.strength, validated.visits),
                    lambda: Records()):
        with pytest.raises(RecordsConstructionError) as refused:
            attempt()
        assert str(refused.value) == NOT_BY_HAND
    assert "validate" in NOT_BY_HAND and "load_records" in NOT_BY_HAND
    with pytest.raises(RecordsConstructionError):
        Records._made(object(), validated.frames(), {})  # a forged token
    with pytest.raises(RecordsConstructionError):  # dataclasses.replace goes through Records(...): refused too
        dataclasses.replace(validated, visits=validated.visits.head(0))


def test_validated_records_are_frozen(validated):
    with pytest.raises(AttributeError):
        validated.patients = validated.patients.head(0)  # type: ignore[misc]


def test_narrowing_keeps_rows_of_valid_records_and_the_same_frame_when_all_are_kept(validated):
    on_p1 = validated.narrowed({name: (frame["patient_id"] == "P1").to_numpy()
                                for name, frame in validated.frames().items()}, renumber=True)
    assert isinstance(on_p1, Records) and on_p1.extra_columns is validated.extra_columns
    assert {name: frame["patient_id"].unique().tolist() for name, frame in on_p1.frames().items()} == {
        "patients": ["P1"], "surgeries": ["P1"], "strength": ["P1"], "visits": ["P1"]}
    assert on_p1.strength.index.tolist() == [0, 1, 2]
    whole = validated.narrowed({"visits": [True] * len(validated.visits)})
    assert all(whole.frames()[name] is frame for name, frame in validated.frames().items())
    with pytest.raises(KeyError, match="no such records file: exams"):
        validated.narrowed({"exams": []})
    with pytest.raises(ValueError, match="visits: a mask of 1 rows for 2 rows"):
        validated.narrowed({"visits": [True]})


def test_a_pickled_copy_is_the_same_records(validated):
    copied = pickle.loads(pickle.dumps(validated))
    assert isinstance(copied, Records)
    for name, frame in validated.frames().items():
        pd.testing.assert_frame_equal(copied.frames()[name], frame)


def test_only_validation_and_the_store_loader_use_the_construction_routes():
    """`Records._made` (with the private token) is called in records/validate.py alone, `Records.from_store` by the
    store's loader alone, and no module of the project calls `Records(...)`."""
    callers: dict[str, set[str]] = {"_made": set(), "from_store": set(), "Records": set()}
    for path in sorted((ROOT / "dashboard").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("_made", "from_store"):
                callers[func.attr].add(str(path.relative_to(ROOT)))
            elif isinstance(func, ast.Name) and func.id == "Records":
                callers["Records"].add(str(path.relative_to(ROOT)))
    records_module = str(package_dir().relative_to(ROOT) / "records" / "validate.py")
    assert callers == {"_made": {records_module}, "from_store": STORE_ROUTE_CALLERS, "Records": set()}
