"""tf.Example message classes built at runtime in a private descriptor pool.

Why not generated ``_pb2`` files: generated code pins a protobuf runtime range
(gencode/runtime skew between protobuf 5 and 7 breaks imports), and TensorFlow
registers the same messages as ``tensorflow.Example`` in the default pool, so a
second copy under that name crashes the process. We describe the wire-identical
messages with ``descriptor_pb2`` under the package ``shardforge.tfproto`` in our
OWN :class:`~google.protobuf.descriptor_pool.DescriptorPool`, so they coexist with
TensorFlow's in one process, in either import order.

Field numbers, types and packing are exactly those of
``tensorflow/core/example/{example,feature}.proto``; bytes produced by one side
parse on the other.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

__all__ = [
    "PACKAGE",
    "BytesList",
    "FloatList",
    "Int64List",
    "Feature",
    "Features",
    "FeatureList",
    "FeatureLists",
    "Example",
    "SequenceExample",
]

PACKAGE = "shardforge.tfproto"

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg, name, number, ftype, *, label=_F.LABEL_OPTIONAL, type_name=None,
           packed=None, oneof=None):
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name is not None:
        f.type_name = f".{PACKAGE}.{type_name}"
    if packed is not None:
        f.options.packed = packed
    if oneof is not None:
        f.oneof_index = oneof
    return f


def _map_field(msg, name, number, entry_name, value_type):
    # A proto3 `map<string, V>` is a repeated nested *Entry message flagged map_entry.
    entry = msg.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=value_type)
    f = msg.field.add(name=name, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED)
    f.type_name = f".{PACKAGE}.{msg.name}.{entry_name}"


def _file_proto() -> descriptor_pb2.FileDescriptorProto:
    fp = descriptor_pb2.FileDescriptorProto(
        name="shardforge/tfproto/example.proto", package=PACKAGE, syntax="proto3"
    )
    rep = _F.LABEL_REPEATED
    _field(fp.message_type.add(name="BytesList"), "value", 1, _F.TYPE_BYTES, label=rep)
    _field(fp.message_type.add(name="FloatList"), "value", 1, _F.TYPE_FLOAT, label=rep,
           packed=True)
    _field(fp.message_type.add(name="Int64List"), "value", 1, _F.TYPE_INT64, label=rep,
           packed=True)

    feature = fp.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    _field(feature, "bytes_list", 1, _F.TYPE_MESSAGE, type_name="BytesList", oneof=0)
    _field(feature, "float_list", 2, _F.TYPE_MESSAGE, type_name="FloatList", oneof=0)
    _field(feature, "int64_list", 3, _F.TYPE_MESSAGE, type_name="Int64List", oneof=0)

    _map_field(fp.message_type.add(name="Features"), "feature", 1, "FeatureEntry", "Feature")
    _field(fp.message_type.add(name="FeatureList"), "feature", 1, _F.TYPE_MESSAGE,
           label=rep, type_name="Feature")
    _map_field(fp.message_type.add(name="FeatureLists"), "feature_list", 1,
               "FeatureListEntry", "FeatureList")

    _field(fp.message_type.add(name="Example"), "features", 1, _F.TYPE_MESSAGE,
           type_name="Features")
    seq = fp.message_type.add(name="SequenceExample")
    _field(seq, "context", 1, _F.TYPE_MESSAGE, type_name="Features")
    _field(seq, "feature_lists", 2, _F.TYPE_MESSAGE, type_name="FeatureLists")
    return fp


POOL = descriptor_pool.DescriptorPool()
POOL.Add(_file_proto())


def _cls(name: str):
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


BytesList = _cls("BytesList")
FloatList = _cls("FloatList")
Int64List = _cls("Int64List")
Feature = _cls("Feature")
Features = _cls("Features")
FeatureList = _cls("FeatureList")
FeatureLists = _cls("FeatureLists")
Example = _cls("Example")
SequenceExample = _cls("SequenceExample")
