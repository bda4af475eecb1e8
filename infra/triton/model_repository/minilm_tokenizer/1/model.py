"""Triton Python backend: MiniLM tokenizer. Needs the `tokenizers` package in the server image."""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


class TritonPythonModel:
    def initialize(self, args):
        here = os.path.dirname(__file__)
        self.tokenizer = Tokenizer.from_file(os.path.join(here, "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.config = json.loads(args["model_config"])

    def execute(self, requests):
        # one tokenizer call for the whole dynamic batch, padded to its longest text, then split
        # back per request (each request may itself carry several rows)
        texts, sizes = [], []
        for request in requests:
            column = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            texts += [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in column]
            sizes.append(len(column))
        encoded = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        responses, start = [], 0
        for n in sizes:
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input_ids", ids[start:start + n]),
                pb_utils.Tensor("attention_mask", mask[start:start + n])]))
            start += n
        return responses
