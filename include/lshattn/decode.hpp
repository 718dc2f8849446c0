#pragma once
// The generic entry point: lshattn::decode(executor, estimator, params, request)
// forwards to the executor's backend, Thrust-style. Executors are values
// (lshattn::reference, lshattn::cpu(...), lshattn::cuda.on(stream)); no global
// switch picks the backend.

#include <concepts>
#include <span>

#include "lshattn/executor/request.hpp"
#include "lshattn/estimator/sample.hpp"

namespace lshattn {

/// Run one decode step for a batch of sequences. All requests are validated
/// before any output is written; on a throw no output has been touched.
template <class Executor, estimator::sampler Est, element_type TQ, element_type TK, element_type TV, class I>
void decode(const Executor& exec, const Est& est, const decode_params& params,
            std::span<const decode_request<TQ, TK, TV, I>> batch) {
  exec.decode(est, params, batch);
}

/// Run one decode step for one sequence.
template <class Executor, estimator::sampler Est, element_type TQ, element_type TK, element_type TV, class I>
void decode(const Executor& exec, const Est& est, const decode_params& params,
            const decode_request<TQ, TK, TV, I>& request) {
  exec.decode(est, params, std::span<const decode_request<TQ, TK, TV, I>>(&request, 1));
}

}  // namespace lshattn
