"""A tiny decoder-only transformer (GPT), small enough to train on a laptop CPU in seconds.

The shape of every GPT since 2018, in one file: token + position embeddings, ``n_layer``
blocks of (LayerNorm → causal self-attention → residual, LayerNorm → MLP → residual), a
final LayerNorm and a linear head back to the vocabulary whose weight *is* the token
embedding (weight tying: one matrix maps ids to vectors and vectors to logits).

``forward(input_ids) -> logits`` of shape (B, T, V): the interface every loss in
:mod:`dpolab.losses` reads, and the one Hugging Face models share through ``.logits``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .generation import generate


@dataclass
class GPTConfig:
    """Sizes of a :class:`TinyGPT`. The defaults give about 0.4M parameters."""

    vocab_size: int
    block_size: int = 32  # longest sequence (prompt + response) the position table covers
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be divisible by n_head, got {self.n_embd} and {self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions ≤ t only."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size): every head attends on its own slice.
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # softmax(q kᵀ / √d + causal mask) v, in one fused kernel (flash / memory-efficient when available).
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """A GPT language model: ``forward(input_ids) -> logits`` (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embeddings
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one matrix, two uses
        self.apply(self._init_weights)
        # GPT-2: scale the init of the projections that write into the residual stream by
        # 1/√(2·n_layer), so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Parameters counted once (the tied embedding/head matrix is one tensor)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab_size) for token ids (B, T).

        ``attention_mask`` is accepted (and ignored) so the model can be called like a
        Hugging Face one. With *right* padding it is not needed: the causal mask already
        stops every real token from seeing the padding after it, so real positions get
        exactly the logits they would get unpadded; the logits *at* padding positions are
        garbage, and the loss mask never reads them. (Left padding would need the mask.)
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2:
            raise ValueError(
                f"input_ids must be a (batch, seq_len) tensor, got {getattr(input_ids, 'shape', type(input_ids))}"
            )
        if input_ids.is_floating_point():
            raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        T = input_ids.shape[1]
        if T > self.config.block_size:
            raise ValueError(f"input_ids has {T} positions, more than block_size={self.config.block_size}")
        pos = torch.arange(T, device=input_ids.device)
        x = self.drop(self.wte(input_ids) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
        stop_token: int | None = None,
    ) -> torch.Tensor:
        """Append up to ``max_new_tokens`` tokens to every row of ``input_ids`` (B, T).

        ``temperature=0`` is greedy (argmax, deterministic); ``> 0`` samples from
        ``softmax(logits / temperature)`` with ``generator`` (seed it for reproducible
        samples). Rows must have the same length (no padding). Once a row has produced
        ``stop_token`` it keeps producing ``stop_token``, and generation ends when every
        row has stopped. Returns (B, T + new) ids. The loop itself is
        :func:`dpolab.training.generation.generate`, shared with Hugging Face models.
        """
        return generate(
            self,
            input_ids,
            max_new_tokens,
            temperature=temperature,
            generator=generator,
            stop_token=stop_token,
            block_size=self.config.block_size,
        )
