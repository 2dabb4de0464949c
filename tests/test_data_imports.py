"""warmstart.data imports torchvision without torch._dynamo (~1.5 s of start-up), and nothing breaks for it."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_torchvision_without_dynamo_and_compile_still_works():
    script = textwrap.dedent("""
        import sys
        import warmstart.data
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
