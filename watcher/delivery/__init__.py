"""Webhooks out: event bodies, signing, the retry decision, the deliverer, its HTTP side."""
