"""detseg installs as one package, `detseg`, and works from a user's own project folder.

Fast: `setup.cfg` lists every package folder and its `package_data` patterns catch every
config. Slow: the wheel is built, installed with the pinned dependencies
(`-c constraints.txt`) into a fresh virtual environment that cannot see this checkout,
and the command line runs there from a folder that has its own `data/` and `models/`
(as a user's project may); then the same commands run with the editable install.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What the build reads besides the package folders (pyproject.toml, setup.cfg, README.md).
BUILD_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md", "LICENSE")
IGNORED_WHILE_COPYING = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
SMOKE_CONFIG = "detseg/configs/smoke/clsloc.yaml"


def setup_options() -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    return config["options"]


def package_dirs() -> dict[str, Path]:
    """`package_dir`: dotted package name -> its folder in the checkout."""
    mapping = {}
    for line in setup_options()["package_dir"].strip().splitlines():
        name, folder = (part.strip() for part in line.split("=", 1))
        mapping[name] = REPO / folder
    return mapping


def listed_packages() -> list[str]:
    return setup_options()["packages"].split()


def package_data() -> dict[str, list[str]]:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    section = config["options.package_data"] if config.has_section("options.package_data") else {}
    return {name: [pattern.strip() for pattern in value.split(",") if pattern.strip()]
            for name, value in section.items()}


def packages_on_disk() -> dict[str, Path]:
    """Every folder with an `__init__.py` under a mapped folder, by its installed name."""
    mapping = package_dirs()
    found: dict[str, Path] = {}
    for package, folder in mapping.items():
        for init in folder.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(folder)
            name = ".".join([package, *relative.parts])
            # a subfolder that is mapped on its own is found from its own mapping
            if name in mapping and mapping[name] != init.parent:
                continue
            found[name] = init.parent
    return found


def test_setup_cfg_lists_every_package_folder():
    on_disk = packages_on_disk()
    listed = listed_packages()
    problems = [f"{name} ({on_disk[name].relative_to(REPO)}) has an __init__.py but setup.cfg "
                f"`packages =` does not list it: the wheel would leave it out"
                for name in sorted(set(on_disk) - set(listed))]
    problems += [f"{name} is listed in setup.cfg `packages =` but no mapped folder with an "
                 f"__init__.py holds it" for name in sorted(set(listed) - set(on_disk))]
    problems += [f"{name} lies outside every package_dir mapping" for name in listed
                 if not any(name == root or name.startswith(root + ".") for root in package_dirs())]
    assert not problems, "\n".join(problems)


def test_package_data_patterns_catch_every_config():
    configs = package_dirs()["detseg.configs"]
    patterns = package_data().get("detseg.configs", [])
    # setuptools expands the patterns as globs relative to the package folder
    shipped = {path for pattern in patterns for path in configs.glob(pattern)}
    yamls = sorted(configs.rglob("*.yaml"))
    assert yamls, f"no YAML configs under {configs}"
    left_out = [str(path.relative_to(REPO)) for path in yamls if path not in shipped]
    assert not left_out, (f"configs that the package_data patterns {patterns} of detseg.configs "
                          f"leave out of the wheel: {left_out}")
    assert (configs / "smoke" / "clsloc.yaml") in shipped


# --- slow: build, install into a fresh environment, run from a user's folder ----------


def clean_env(bin_dir: Path) -> dict[str, str]:
    """The environment a user's shell would give: no PYTHONPATH, this venv's bin first."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    return env


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (f"{' '.join(map(str, command))} (in {cwd}) exited {done.returncode}:\n"
                                  f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def build_wheel(tmp_path: Path) -> Path:
    """Builds from a copy of the sources, so no build/ or egg-info lands in the checkout."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_FILES:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    for folder in {path.relative_to(REPO).parts[0] for path in package_dirs().values()}:
        shutil.copytree(REPO / folder, source / folder, ignore=IGNORED_WHILE_COPYING)
    out = tmp_path / "wheelhouse"
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(source)], cwd=tmp_path, env=clean_env(Path(sys.executable).parent))
    wheels = list(out.glob("detseg-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def check_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name.rsplit("/", 1)[0] for name in names if name.endswith(".dist-info/METADATA"))
        top_level = archive.read(f"{info}/top_level.txt").decode().split()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    assert top_level == ["detseg"], top_level
    roots = sorted({name.split("/", 1)[0] for name in names} - {info})
    assert roots == ["detseg"], f"the wheel installs top-level names besides detseg: {roots}"
    assert SMOKE_CONFIG in names
    assert "detseg = detseg.cli:main" in entry_points
    # every module and config of the checkout's packages is in the wheel
    expected = set()
    for package, folder in packages_on_disk().items():
        prefix = package.replace(".", "/")
        expected |= {f"{prefix}/{path.name}" for path in folder.glob("*.py")}
    expected |= {f"detseg/configs/{path.relative_to(package_dirs()['detseg.configs']).as_posix()}"
                 for path in package_dirs()["detseg.configs"].rglob("*.yaml")}
    missing = sorted(expected - set(names))
    assert not missing, f"files of the checkout missing from the wheel: {missing}"


def make_fresh_venv(root: Path, wheel: Path) -> Path:
    """A venv of the base interpreter (not this one), with the wheel and the pinned deps.

    The venv has no installer of its own: this environment's installs into it (`--python`),
    uv where `make install` put it (as `make install` installs), else pip.
    """
    base = Path(getattr(sys, "_base_executable", sys.executable))
    run([str(base), "-m", "venv", "--without-pip", str(root)], cwd=root.parent, env=clean_env(base.parent))
    python = root / "bin" / "python"
    uv = Path(sys.executable).parent / "uv"
    if uv.is_file():
        install = [str(uv), "pip", "install", "--python", str(python), "--quiet", "--compile-bytecode"]
    else:
        install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile"]
    run([*install, "-c", str(REPO / "constraints.txt"), str(wheel)],
        cwd=root.parent, env=clean_env(Path(sys.executable).parent), timeout=900)
    return root / "bin"


def make_user_folder(path: Path) -> Path:
    """A user's project: its own `data/` (a package, even) and `models/` beside our commands."""
    (path / "data").mkdir(parents=True)
    (path / "data" / "__init__.py").write_text("raise ImportError('the user data/ folder was imported')\n")
    (path / "models").mkdir()
    (path / "models" / "__init__.py").write_text("raise ImportError('the user models/ folder was imported')\n")
    return path


# Where the packages come from; `detseg.models` is located without running it (TensorFlow).
WHERE_ARE_WE = ("import importlib.util, sys, detseg, detseg.data, detseg.configs; "
                "print(detseg.data.__file__); print(importlib.util.find_spec('detseg.models').origin); "
                "print(detseg.__file__); print(any('__editable__' in name for name in sys.modules))")


def exercise_commands(bin_dir: Path, user: Path, timings: dict[str, float], label: str) -> list[str]:
    """`detseg --help`, `detseg data synth`, a smoke training run; returns WHERE_ARE_WE's lines."""
    env = clean_env(bin_dir)
    detseg = str(bin_dir / "detseg")

    def timed(name: str, command: list[str]) -> str:
        started = time.perf_counter()
        out = run(command, user, env)
        timings[f"{label} {name}"] = time.perf_counter() - started
        return out

    assert "train" in timed("--help", [detseg, "--help"])
    assert "train" in timed("-m detseg --help", [str(bin_dir / "python"), "-m", "detseg", "--help"])
    timed("data synth", [detseg, "data", "synth", "--out", "synth", "--num-images", "8", "--image-size", "64"])
    train_json = user / "synth" / "annotations" / "instances_train.json"
    assert train_json.is_file()
    # The packaged smoke config by name, on the data just made (its val split may hold a single
    # image, so the train split doubles as validation): one epoch of stage 1 (bottleneck
    # features, head), no fine-tuning; then the model is saved and evaluated.
    timed("train", [detseg, "train", "smoke/clsloc", "runs_dir=runs", "stage1.epochs=1", "stage2.epochs=0",
                    "data.synthetic=null", f"data.train={train_json.relative_to(user)}",
                    f"data.val={train_json.relative_to(user)}", "--quiet"])
    for name in ("config.yaml", "model.keras", "evaluation.json"):
        assert (user / "runs" / "smoke_clsloc" / name).is_file(), name
    return timed("imports", [str(bin_dir / "python"), "-c", WHERE_ARE_WE]).split()


@pytest.mark.slow
def test_wheel_installs_one_namespace_and_runs_from_a_users_folder(tmp_path):
    timings: dict[str, float] = {}
    started = time.perf_counter()
    wheel = build_wheel(tmp_path)
    timings["build wheel"] = time.perf_counter() - started
    check_wheel_contents(wheel)

    venv = tmp_path / "fresh-venv"
    started = time.perf_counter()
    try:
        bin_dir = make_fresh_venv(venv, wheel)
        timings["fresh venv + pinned install"] = time.perf_counter() - started
        site = next((venv / "lib").glob("python*/site-packages"))
        assert not list(site.glob("__editable__*")), "the fresh venv sees an editable install"
        data_file, models_file, package_file, editable = exercise_commands(
            bin_dir, make_user_folder(tmp_path / "user-installed"), timings, "installed")
        for file in (data_file, models_file, package_file):
            assert Path(file).is_relative_to(site / "detseg"), file
        assert editable == "False"
    finally:
        started = time.perf_counter()
        shutil.rmtree(venv, ignore_errors=True)  # about 3 GB: do not leave it to pytest's tmp
        timings["remove fresh venv"] = time.perf_counter() - started

    # The developer's editable install, from a user's folder as well.
    data_file, models_file, package_file, _ = exercise_commands(
        Path(sys.executable).parent, make_user_folder(tmp_path / "user-editable"), timings, "editable")
    assert Path(data_file) == REPO / "data" / "__init__.py"
    assert Path(models_file) == REPO / "models" / "__init__.py"
    assert Path(package_file) == REPO / "detseg" / "__init__.py"
    print("packaging timings: " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()))
