"""``rtb monitor``: ongoing monitoring of production windows.

``sources`` cuts windows, ``reference`` holds what they are compared with,
``engine`` measures one window, ``match`` explains its shift by a benchmark
threat, ``estimate`` scores accuracy without labels, ``rules`` raises alerts,
``records`` stores windows, ``loop`` drives it, ``demo`` builds a stream.
"""
