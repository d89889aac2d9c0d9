"""vmx_model."""
