"""jvae.metrics.torch_files against torch.save: both formats read back equal, unsafe pickles refused.

Files are written by the real ``torch.save`` (the zip format, and the legacy one
with ``_use_new_zipfile_serialization=False``) holding the cases a state dict
can: several dtypes, a transposed (non-contiguous) tensor, views sharing one
storage at an offset, a parameter, an empty tensor and a scalar. The lpips
wheel's own ``vgg.pth`` (legacy format, saved from a GPU) is read too.
"""

import collections
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from jvae.base import JvaeError
from jvae.metrics.torch_files import TorchFileError, read_torch_file

torch = pytest.importorskip("torch")


def _state_dict():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=gen)
    shared = torch.arange(40, dtype=torch.float32)
    sd = collections.OrderedDict()
    sd["float32"] = torch.randn(2, 3, 4, generator=gen)
    sd["float16"] = torch.randn(7, generator=gen).half()
    sd["float64"] = torch.randn(3, 2, generator=gen).double()
    sd["bfloat16"] = torch.randn(5, generator=gen).bfloat16()
    sd["int64"] = torch.arange(-3, 9).reshape(3, 4)
    sd["int32"] = torch.arange(5, dtype=torch.int32)
    sd["bool"] = torch.tensor([True, False, True])
    sd["uint8"] = torch.arange(250, 256, dtype=torch.uint8)
    sd["transposed"] = base.t()  # strides (1, 5)
    sd["base"] = base
    sd["view_a"] = shared[3:15].view(3, 4)  # storage offset 3
    sd["view_b"] = shared[10:30:2]  # offset 10, stride 2, same storage
    sd["strided"] = sd["float32"][:, ::2, 1:]  # offset and steps in two axes
    sd["parameter"] = torch.nn.Parameter(torch.randn(4, 4, generator=gen))
    sd["empty"] = torch.zeros(0, 3)
    sd["scalar"] = torch.tensor(7, dtype=torch.int64)
    return sd


def _expected(sd):
    out = {}
    for key, value in sd.items():
        value = value.detach()
        out[key] = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    return out


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_torch_save_round_trips(tmp_path, zip_format):
    sd = _state_dict()
    path = tmp_path / "weights.pth"
    torch.save(sd, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) == zip_format
    got = read_torch_file(path)
    assert list(got) == list(sd)
    for key, want in _expected(sd).items():
        value = got[key]
        assert value.shape == want.shape, key
        assert value.flags.c_contiguous and value.flags.owndata and value.flags.writeable, key
        if key == "bfloat16":
            assert value.dtype.name == "bfloat16"
            value = value.astype(np.float32)
        else:
            assert value.dtype == want.dtype, key
        np.testing.assert_array_equal(value, want, err_msg=key)


def test_a_module_state_dict_reads_like_torch_load(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 2))
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    got = read_torch_file(path)
    ref = torch.load(path, weights_only=True)
    assert list(got) == list(ref)
    for key, value in ref.items():
        np.testing.assert_array_equal(got[key], value.numpy())


def test_the_lpips_wheel_heads_file_reads(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("lpips")
    if spec is None:
        pytest.skip("lpips is not installed")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "v0.1" / "vgg.pth"
    got = read_torch_file(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert list(got) == [f"lin{k}.model.1.weight" for k in range(5)] == list(ref)
    for key, value in ref.items():
        np.testing.assert_array_equal(got[key], value.numpy())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _legacy_header():
    return b"".join(pickle.dumps(v, protocol=2) for v in
                    (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))


def test_a_pickle_calling_os_system_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"weight": _Evil(marker)}, protocol=2)
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(_legacy_header() + payload)
    archive = tmp_path / "zip.pth"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/version", "3\n")
    for path in (legacy, archive):
        with pytest.raises(TorchFileError, match=r"os\.system|posix\.system") as info:
            read_torch_file(path)
        assert str(path) in str(info.value) and "refused" in str(info.value)
        assert isinstance(info.value, JvaeError)
    assert not marker.exists()


def test_other_files_name_themselves(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a tensor file")
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listing)
    pickled = tmp_path / "plain.pkl"
    pickled.write_bytes(pickle.dumps({"a": 1}))
    for path, words in ((text, "magic number"), (listing, "list, not a state dict"),
                        (tmp_path / "absent.pth", "not found"), (pickled, "magic number")):
        with pytest.raises(TorchFileError, match=words) as info:
            read_torch_file(path)
        assert str(path) in str(info.value)


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buf)
    # Rewrite the size (4,) to (9,): the tensor would read past its 4-element storage.
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        members = {n: z.read(n) for n in z.namelist()}
    name = next(n for n in members if n.endswith("data.pkl"))
    members[name] = members[name].replace(b"K\x04\x85", b"K\x09\x85", 1)
    path = tmp_path / "bad.pth"
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    with pytest.raises(TorchFileError, match="past its storage"):
        read_torch_file(path)
