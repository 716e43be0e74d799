"""sparsegrad_lab: sparse-times-dense matmul whose gradient stays sparse.

The heart is :func:`sparse_mm`. ``import sparsegrad_lab`` needs torch alone; plotting and
widget helpers import matplotlib and ipywidgets only when their modules are imported.

>>> import torch, sparsegrad_lab as sgl
>>> A = torch.eye(3).to_sparse_csr().requires_grad_()
>>> sgl.sparse_mm(A, torch.ones(3, 4)).shape
torch.Size([3, 4])
"""

from .batching import sparse_block_diag, sparse_block_diag_split, stack_csr
from .csr_from_values import csr_tensor
from .errors import InputTypeError, InputValueError, MemoryBudgetError, SparseGradLabError
from .layers import SparseLinear
from .ops import sampled_mm, sparse_mm, sparsity_pattern
from .pattern import SparsityPattern
from .pattern_op import PatternIndices, pattern_mm, pattern_sddmm
from .strategies import BACKWARD_STRATEGIES, BackwardStrategy

#: The package's version (also in pyproject.toml; a test checks they agree).
__version__ = "0.1.0"

__all__ = [
    "BACKWARD_STRATEGIES",
    "BackwardStrategy",
    "InputTypeError",
    "InputValueError",
    "MemoryBudgetError",
    "PatternIndices",
    "SparseGradLabError",
    "SparseLinear",
    "SparsityPattern",
    "__version__",
    "csr_tensor",
    "pattern_mm",
    "pattern_sddmm",
    "sampled_mm",
    "sparse_block_diag",
    "sparse_block_diag_split",
    "sparse_mm",
    "sparsity_pattern",
    "stack_csr",
]
