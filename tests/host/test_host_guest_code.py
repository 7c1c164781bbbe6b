"""The guest writer's shipped bytes are what its listing assembles to."""

import shutil
import subprocess

import pytest

from engine.host.guest import WRITERS, listing_path


@pytest.mark.parametrize("arch", sorted(WRITERS))
def test_shipped_code_is_the_listing_assembled(arch, tmp_path):
    writer = WRITERS[arch]()
    if arch != "x86_64":
        pytest.skip(f"no assembler check for {arch} yet")
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        pytest.skip("binutils (as, objcopy) are not installed")
    obj, binary = tmp_path / "g.o", tmp_path / "g.bin"
    subprocess.run(
        ["as", "--64", "-o", str(obj), str(listing_path(writer))], check=True, timeout=60
    )
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    assert binary.read_bytes() == writer.code


def test_code_fits_before_the_page_tables():
    for cls in WRITERS.values():
        w = cls()
        assert w.layout.code_gpa + len(w.code) <= 0x2000
        assert (
            w.layout.cmd_gpa + w.layout.cmd_bytes <= w.layout.system_size <= w.layout.data_min_gpa
        )
