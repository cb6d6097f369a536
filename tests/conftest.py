"""Shared pytest setup: the suite runs in float64 unless a test asks for f32."""

import jax

jax.config.update("jax_enable_x64", True)
