# runtime/dist: launch environment, rendezvous and the Comm implementations (included from
# runtime/CMakeLists.txt).
ftrun_library(ftrun_dist
  SOURCES dist/placeholder.cpp
  DEPS ftrun_sharding)
