"""Issue 11 on real MPI ranks: the body of tests/test_habits.py under mpiexec."""

import pytest

from habits import CASES, HABITS, check_habit, topology_for

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.mark.parametrize("habit", HABITS)
@pytest.mark.parametrize("algorithm, kwargs", CASES, ids=lambda c: str(c))
def test_mpi_habit_gives_the_update_rule_on_the_final_gradients(comm, algorithm, kwargs, habit):
    n = comm.size
    check_habit(comm, algorithm, kwargs, habit, topology_for(algorithm, n))
