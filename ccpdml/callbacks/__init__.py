"""Training callbacks of ccpdml (METHOD §3.5, §4.8)."""

from ccpdml import registration as _registration
from ccpdml.callbacks.candidates import CandidateStream
from ccpdml.callbacks.ccp import CCPCallback
from ccpdml.callbacks.validation import RetrievalValidation

__all__ = ["CCPCallback", "CandidateStream", "RetrievalValidation"]

# Last: the classes of the other ccpdml packages are registered with Keras too.
_registration.install(finishing=__name__)
