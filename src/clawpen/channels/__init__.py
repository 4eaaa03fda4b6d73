"""Chat platforms. Each adapter only translates: platform events in, text out."""
