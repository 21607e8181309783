"""mcil.result: the provenance fields that are not covered by a training run (tests/test_train.py)."""

import platform

from mcil.result import cpu_model


def test_cpu_model_reads_the_model_name_of_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.80GHz\n"
                    "flags\t\t: fpu vme\n\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.80GHz\n")
    assert cpu_model(info) == "Intel(R) Xeon(R) Processor @ 2.80GHz"


def test_cpu_model_falls_back_to_platform_without_a_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nCPU implementer\t: 0x41\n")          # aarch64 cpuinfo has no model name
    expected = platform.processor() or platform.machine() or "unknown"
    assert cpu_model(info) == expected
    assert cpu_model(tmp_path / "absent") == expected
