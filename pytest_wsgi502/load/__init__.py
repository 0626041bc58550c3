"""Load generation through the httpx API (requests in, ``httpx.Response`` out) on a fast transport."""
