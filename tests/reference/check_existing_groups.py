#!/usr/bin/env python3
# usage: check_existing_groups.py OLD.h5 NEW.h5  (e.g. OLD from `git show main:tests/reference/reference_state.h5`)
# Compares every dataset and attribute of the OLD reference file with the same path in NEW:
# values, dtypes, shapes, and the raw stored bytes at the dataset's file offset.
import sys, h5py, numpy as np
old_path, new_path = sys.argv[1], sys.argv[2]
a = h5py.File(old_path, 'r'); b = h5py.File(new_path, 'r')
raw_a = open(old_path, 'rb').read(); raw_b = open(new_path, 'rb').read()
n = 0; raw = 0
def same(x, y):
    x, y = np.asarray(x), np.asarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and (x.tolist() == y.tolist())
def cmp(name, obj):
    global n, raw
    o = b[name]
    assert set(obj.attrs) == set(o.attrs), name
    for k, v in obj.attrs.items():
        assert same(o.attrs[k], v), (name, k)
    if isinstance(obj, h5py.Dataset):
        assert same(obj[()], o[()]), name
        off_a, off_b = obj.id.get_offset(), o.id.get_offset()
        size = obj.id.get_storage_size()
        if off_a is not None:
            assert off_a == off_b and size == o.id.get_storage_size(), name
            assert raw_a[off_a:off_a + size] == raw_b[off_b:off_b + size], name
            raw += 1
        n += 1
a.visititems(cmp)
assert set(a.attrs) == set(b.attrs) and all(same(a.attrs[k], b.attrs[k]) for k in a.attrs)
print(f"{n} datasets identical in value, dtype and shape; {raw} of them byte-identical at the same file offset;"
      f" groups added: {sorted(set(b) - set(a))}")
