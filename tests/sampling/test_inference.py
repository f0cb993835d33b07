import numpy as np

from cm3jax.sampling.inference import with_context

EOS = 1


def test_retrieved_documents_go_first_and_the_least_relevant_are_dropped_to_fit():
    request = (np.array([7, 8, 9]), np.array([3, 9]))
    docs = [np.array([20, 21]), np.array([30, 31, 32]), np.array([40])]
    full = with_context(request, docs, EOS, budget=100)
    np.testing.assert_array_equal(full[0], [20, 21, EOS, 30, 31, 32, EOS, 40, EOS, 7, 8, 9])
    np.testing.assert_array_equal(full[1], [20, 21, EOS, 30, 31, 32, EOS, 40, EOS, 3, 9])
    two = with_context(request, docs, EOS, budget=10)  # 3 + 3 + 4 fits; the third document does not
    np.testing.assert_array_equal(two[0], [20, 21, EOS, 30, 31, 32, EOS, 7, 8, 9])
    alone = with_context(request, docs, EOS, budget=4)
    np.testing.assert_array_equal(alone[0], [7, 8, 9])
    assert with_context(request, [], EOS, 100)[1].tolist() == [3, 9]
