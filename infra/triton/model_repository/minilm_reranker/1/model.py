"""Triton Python backend: MiniLM similarity reranker. Embeds queries and passages with one BLS
call to the `minilm` ensemble, then scores each pair by the dot product of unit vectors."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        queries, passages, sizes = [], [], []
        for request in requests:
            q = pb_utils.get_input_tensor_by_name(request, "query").as_numpy().reshape(-1)
            p = pb_utils.get_input_tensor_by_name(request, "passage").as_numpy().reshape(-1)
            queries.append(q)
            passages.append(p)
            sizes.append(len(q))
        texts = np.concatenate(queries + passages).astype(np.object_).reshape(-1, 1)
        vectors = []
        for start in range(0, len(texts), 64):  # minilm's max batch size
            infer = pb_utils.InferenceRequest(
                model_name="minilm", requested_output_names=["embedding"],
                inputs=[pb_utils.Tensor("text", texts[start:start + 64])])
            response = infer.exec()
            if response.has_error():
                raise pb_utils.TritonModelException(response.error().message())
            vectors.append(pb_utils.get_output_tensor_by_name(response, "embedding").as_numpy())
        vectors = np.concatenate(vectors)
        n = sum(sizes)
        scores = np.sum(vectors[:n] * vectors[n:], axis=1, dtype=np.float32).reshape(-1, 1)
        responses, start = [], 0
        for size in sizes:
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("score", scores[start:start + size])]))
            start += size
        return responses
