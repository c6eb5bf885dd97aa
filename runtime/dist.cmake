# runtime/dist: launch environment (RankInfo), rendezvous and the Comm implementations over
# gloo, OpenMPI and (CUDA builds only) NCCL. Included from runtime/CMakeLists.txt.
set(FTRUN_DIST_SOURCES dist/rank_info.cpp dist/rendezvous.cpp dist/gloo_comm.cpp dist/mpi_comm.cpp)

# NCCL only with a CUDA libtorch: its TorchConfig sets TORCH_CUDA_LIBRARIES (Debian's CPU
# 1.13 does not). Then nccl_comm.cpp is built and FTRUN_WITH_NCCL switches it on.
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  set(FTRUN_DIST_WITH_NCCL ON)
  list(APPEND FTRUN_DIST_SOURCES dist/nccl_comm.cpp)
else()
  set(FTRUN_DIST_WITH_NCCL OFF)
endif()

ftrun_library(ftrun_dist
  SOURCES ${FTRUN_DIST_SOURCES}
  DEPS ftrun_sharding MPI::MPI_CXX)
if(FTRUN_DIST_WITH_NCCL)
  target_compile_definitions(ftrun_dist PRIVATE FTRUN_WITH_NCCL=1)
endif()
