"""warmstart.data imports torchvision without torch._dynamo (~1.5 s of start-up), and nothing breaks for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_torchvision_without_dynamo_and_compile_still_works():
    script = textwrap.dedent("""
        import sys
        import warmstart.data.images  # a module of warmstart that imports torchvision
        import torchvision
        assert "torchvision" in sys.modules and "torch._dynamo" not in sys.modules, "dynamo was imported"
        import torch
        from torchvision.ops import roi_align
        out = roi_align(torch.arange(64.0).view(1, 1, 8, 8), [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], 2)
        assert out.shape == (1, 1, 2, 2)
        import torch._dynamo.utils
        assert torch._dynamo.utils.is_compile_supported("cpu") in (True, False)
        assert hasattr(torch._dynamo, "reset")  # the real package, not the stand-in
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_torchvision_that_needs_more_of_dynamo_is_imported_the_ordinary_way():
    # the first import of torchvision.ops.roi_align fails (as a torchvision wanting more than the stand-in would);
    # warmstart.data must then import torchvision normally instead of failing
    script = textwrap.dedent("""
        import sys
        class FailOnce:
            failed = False
            def find_spec(self, name, path=None, target=None):
                if name == "torchvision.ops.roi_align" and not FailOnce.failed:
                    FailOnce.failed = True
                    raise ImportError("cannot import name 'something_new' from 'torch._dynamo.utils'")
                return None
        sys.meta_path.insert(0, FailOnce())
        import warmstart.data.images  # a module of warmstart that imports torchvision
        import torchvision, torch
        assert FailOnce.failed
        from torchvision.ops import roi_align
        out = roi_align(torch.arange(64.0).view(1, 1, 8, 8), [torch.tensor([[0.0, 0.0, 3.0, 3.0]])], 2)
        assert out.shape == (1, 1, 2, 2)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
