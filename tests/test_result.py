"""mcil.result: the provenance fields that are not covered by a training run (tests/test_train.py)."""

import platform

import torch

from mcil.result import ISA_CAP_VARIABLES, cpu_model, cpu_provenance, cpu_signature


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


def test_cpu_signature_reads_vendor_family_model_stepping_and_the_isa_torch_dispatches_to(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nstepping\t: 1\nflags\t\t: fpu avx2 avx512f\n\n"
                    "processor\t: 1\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n")
    sig = cpu_signature(info)
    # the first processor's block, and "model" is not confused with "model name"
    assert (sig["vendor"], sig["family"], sig["model"], sig["stepping"]) == ("AuthenticAMD", 25, 17, 1)
    assert sig["isa"] == torch.backends.cpu.get_cpu_capability() and sig["isa"]


def test_cpu_signature_without_x86_fields_keeps_the_isa(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n")
    for source in (info, tmp_path / "absent"):
        sig = cpu_signature(source)
        assert (sig["vendor"], sig["family"], sig["model"], sig["stepping"]) == (None, None, None, None)
        assert sig["isa"] == torch.backends.cpu.get_cpu_capability()


def test_cpu_signature_records_the_isa_caps_that_are_set(tmp_path, monkeypatch):
    for name in ISA_CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert cpu_signature(tmp_path / "absent")["isa_caps"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    monkeypatch.setenv("MKL_CBWR", "")                      # set but empty: not a cap
    assert cpu_signature(tmp_path / "absent")["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def test_cpu_provenance_is_model_and_signature_from_one_read(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
                    "model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz\nstepping\t: 6\n")
    prov = cpu_provenance(info)
    assert prov == {"cpu": cpu_model(info), "cpu_signature": cpu_signature(info)}
    assert prov["cpu"] == "Intel(R) Xeon(R) Processor @ 2.80GHz" and prov["cpu_signature"]["model"] == 106
