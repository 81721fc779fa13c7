"""Alert episodes and their transitions."""
