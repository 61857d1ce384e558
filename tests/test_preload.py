"""engines/preload.py: tcmalloc found on the system and preloaded into the processes vLLM spawns, nowhere else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cotgap_ray.engines import preload


def touch(d: Path, *names: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_bytes(b"")


def test_finds_the_minimal_build_first_by_its_soname(tmp_path):
    touch(tmp_path / "a", "libtcmalloc.so.4", "libtcmalloc.so.4.5.10")
    touch(tmp_path / "b", "libtcmalloc_minimal.so.4.5.10", "libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so.4.debug")
    dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert preload.find_tcmalloc(dirs) == str(tmp_path / "b" / "libtcmalloc_minimal.so.4")
    assert preload.find_tcmalloc([str(tmp_path / "a")]) == str(tmp_path / "a" / "libtcmalloc.so.4")
    assert preload.find_tcmalloc([str(tmp_path / "none")]) is None


def test_preloaded_inside_the_block_first_and_restored_after(tmp_path):
    touch(tmp_path, "libtcmalloc_minimal.so.4")
    lib = str(tmp_path / "libtcmalloc_minimal.so.4")
    env = {"LD_PRELOAD": "/opt/libgomp.so"}
    with preload.tcmalloc_for_children(env, [str(tmp_path)]) as path:
        assert path == lib and env["LD_PRELOAD"] == f"{lib}:/opt/libgomp.so"
        env["LD_PRELOAD"] += ":/opt/added_by_vllm.so"
    assert env == {"LD_PRELOAD": "/opt/libgomp.so"}
    env = {}
    with preload.tcmalloc_for_children(env, [str(tmp_path)]):
        assert env["LD_PRELOAD"] == lib
    assert env == {}


def test_restored_when_the_engine_fails_to_start(tmp_path):
    touch(tmp_path, "libtcmalloc.so.4")
    env: dict[str, str] = {}
    with pytest.raises(RuntimeError), preload.tcmalloc_for_children(env, [str(tmp_path)]):
        raise RuntimeError("engine died")
    assert env == {}


def test_already_preloaded_or_turned_off_changes_nothing(tmp_path, monkeypatch, capsys):
    touch(tmp_path, "libtcmalloc_minimal.so.4")
    monkeypatch.setattr(preload, "_hinted", False)
    for env in ({"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"}, {"COTGAP_TCMALLOC": "0"}):
        before = dict(env)
        with preload.tcmalloc_for_children(env, [str(tmp_path)]) as path:
            assert path is None and env == before
    assert capsys.readouterr().err == ""  # neither is a machine without tcmalloc: no hint


def test_a_named_library_is_used_and_a_wrong_name_is_refused(tmp_path):
    touch(tmp_path, "my_tcmalloc.so")
    lib = str(tmp_path / "my_tcmalloc.so")
    assert preload.tcmalloc_path({"COTGAP_TCMALLOC": lib}, []) == lib
    with pytest.raises(FileNotFoundError, match="COTGAP_TCMALLOC=/nope.so: no such file; unset it, or set it to 0"):
        preload.tcmalloc_path({"COTGAP_TCMALLOC": "/nope.so"}, [])


def test_a_machine_without_tcmalloc_is_told_how_to_get_it_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(preload, "_hinted", False)
    for _ in range(2):
        with preload.tcmalloc_for_children({}, [str(tmp_path)]) as path:
            assert path is None
    err = capsys.readouterr().err
    assert err.count("no tcmalloc on this machine") == 1 and "libtcmalloc-minimal4" in err


@pytest.mark.skipif(preload.find_tcmalloc() is None, reason="no tcmalloc on this machine (scripts/setup.sh installs "
                                                               "it on Debian/Ubuntu as root)")
def test_a_child_started_inside_the_block_really_loads_it(monkeypatch):
    """The real library, a real child: its memory map names tcmalloc; a child started after the block does not."""
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv("COTGAP_TCMALLOC", raising=False)
    show_maps = [sys.executable, "-c", "print(open('/proc/self/maps').read())"]
    with preload.tcmalloc_for_children() as path:
        inside = subprocess.run(show_maps, capture_output=True, text=True, check=True).stdout
    after = subprocess.run(show_maps, capture_output=True, text=True, check=True).stdout
    assert path and Path(path).name.split(".so")[0] in inside
    assert "libtcmalloc" not in after


def test_every_core_on_a_small_machine_unless_the_user_chose(monkeypatch):
    env: dict[str, str] = {}
    with preload.every_core_for_children(env, n_cpus=2) as applied:
        assert applied and env == {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    assert env == {}
    with preload.every_core_for_children(env, n_cpus=preload.SMALL_MACHINE_CPUS) as applied:
        assert not applied and env == {}  # a big machine keeps vLLM's reserved scheduler core
    for chosen in ({"VLLM_CPU_NUM_OF_RESERVED_CPU": "1"}, {"VLLM_CPU_OMP_THREADS_BIND": "0-1"}):
        before = dict(chosen)
        with preload.every_core_for_children(chosen, n_cpus=2) as applied:
            assert not applied and chosen == before
    with pytest.raises(RuntimeError), preload.every_core_for_children(env, n_cpus=2):
        raise RuntimeError("engine died")
    assert env == {}
    assert preload.allowed_cpus() >= 1
