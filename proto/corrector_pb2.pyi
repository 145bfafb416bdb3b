from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_FULL: _ClassVar[Mode]
    MODE_SUBSTITUTION: _ClassVar[Mode]

class Decoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECODING_UNSPECIFIED: _ClassVar[Decoding]
    DECODING_AGGRESSIVE: _ClassVar[Decoding]
    DECODING_GREEDY: _ClassVar[Decoding]
MODE_UNSPECIFIED: Mode
MODE_FULL: Mode
MODE_SUBSTITUTION: Mode
DECODING_UNSPECIFIED: Decoding
DECODING_AGGRESSIVE: Decoding
DECODING_GREEDY: Decoding

class Options(_message.Message):
    __slots__ = ("mode", "skip_spans", "decoding", "min_confidence")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SKIP_SPANS_FIELD_NUMBER: _ClassVar[int]
    DECODING_FIELD_NUMBER: _ClassVar[int]
    MIN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    mode: Mode
    skip_spans: bool
    decoding: Decoding
    min_confidence: float
    def __init__(self, mode: _Optional[_Union[Mode, str]] = ..., skip_spans: _Optional[bool] = ..., decoding: _Optional[_Union[Decoding, str]] = ..., min_confidence: _Optional[float] = ...) -> None: ...

class CorrectRequest(_message.Message):
    __slots__ = ("text", "options", "id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    options: Options
    id: str
    def __init__(self, text: _Optional[str] = ..., options: _Optional[_Union[Options, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class EditSpan(_message.Message):
    __slots__ = ("start", "end", "replacement", "confidence")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    replacement: str
    confidence: float
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., replacement: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class CorrectResponse(_message.Message):
    __slots__ = ("text", "spans", "artifact_id", "id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    spans: _containers.RepeatedCompositeFieldContainer[EditSpan]
    artifact_id: str
    id: str
    def __init__(self, text: _Optional[str] = ..., spans: _Optional[_Iterable[_Union[EditSpan, _Mapping]]] = ..., artifact_id: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class CorrectBatchRequest(_message.Message):
    __slots__ = ("texts", "options")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    options: Options
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class CorrectBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CorrectResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[CorrectResponse, _Mapping]]] = ...) -> None: ...
