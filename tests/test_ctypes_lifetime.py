"""The compiled CPU loops get only addresses (``geometry_cpu._ptr``): an array made inside a call's argument list
(``_ptr(np.array(...))``) is freed before the C function reads it. That use-after-free crashed the DALI CPU graph
intermittently ("PyThreadState_Get: ... the GIL is released" in a DALI thread, within two epochs of a visible-only
loader). Every address handed to C must be of an array held by a name for the whole call."""
from __future__ import annotations

import ast
import inspect

from ocp_dali.kernels import geometry_cpu


def ptr_arguments(source: str) -> list[ast.expr]:
    return [node.args[0] for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_ptr"]


def test_every_address_handed_to_the_compiled_loops_is_of_a_named_array():
    args = ptr_arguments(inspect.getsource(geometry_cpu))
    assert len(args) >= 15  # the warp, LSJ, jitter and composite calls
    temporaries = [ast.unparse(a) for a in args if not isinstance(a, ast.Name)]
    assert not temporaries, f"_ptr of a temporary (freed before the C call reads it): {temporaries}"


def test_the_check_finds_a_temporary():
    args = ptr_arguments("f(_ptr(img), _ptr(_inv(q)), _ptr(np.array(factors)))")
    assert [ast.unparse(a) for a in args if not isinstance(a, ast.Name)] == ["_inv(q)", "np.array(factors)"]
