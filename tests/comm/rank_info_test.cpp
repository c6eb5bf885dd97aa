// Launch-environment detection: every mode (single, torchrun-style, OpenMPI, Slurm), their
// precedence, and that partial or contradictory variables are errors naming the variable.
#include <gtest/gtest.h>

#include "comm/rank_info.h"

using ftrun::comm::detect_rank_info;
using ftrun::comm::RankInfo;
using Env = std::map<std::string, std::string>;

namespace {

// The error message of detect_rank_info(env), or "" if it did not throw.
std::string error_of(const Env& env) {
  try {
    detect_rank_info(env);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

Env torchrun(int rank, int world, int local, int local_world) {
  return {{"RANK", std::to_string(rank)},         {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(local)},  {"LOCAL_WORLD_SIZE", std::to_string(local_world)},
          {"MASTER_ADDR", "10.1.2.3"},            {"MASTER_PORT", "29511"}};
}

Env openmpi(int rank, int world, int local, int local_world) {
  return {{"OMPI_COMM_WORLD_RANK", std::to_string(rank)},
          {"OMPI_COMM_WORLD_SIZE", std::to_string(world)},
          {"OMPI_COMM_WORLD_LOCAL_RANK", std::to_string(local)},
          {"OMPI_COMM_WORLD_LOCAL_SIZE", std::to_string(local_world)},
          {"OMPI_COMM_WORLD_NODE_RANK", "5"}};  // a trap: not the node index
}

Env slurm() {
  return {{"SLURM_PROCID", "5"},          {"SLURM_NTASKS", "8"},       {"SLURM_LOCALID", "1"},
          {"SLURM_NODEID", "2"},          {"SLURM_NTASKS_PER_NODE", "2"}, {"SLURM_STEP_ID", "0"},
          {"SLURM_JOB_ID", "4123456"},    {"SLURM_JOB_NODELIST", "node[01-03,07],gpu5"}};
}

}  // namespace

TEST(RankInfo, SingleProcessWithoutLauncherEnv) {
  const RankInfo r = detect_rank_info(Env{{"HOME", "/root"}, {"MASTER_ADDR", "x"}});
  EXPECT_EQ(r.launcher, "single");
  EXPECT_EQ(r.rank, 0);
  EXPECT_EQ(r.world_size, 1);
  EXPECT_EQ(r.local_rank, 0);
  EXPECT_EQ(r.local_world_size, 1);
  EXPECT_EQ(r.node_rank, 0);
}

TEST(RankInfo, Torchrun) {
  const RankInfo r = detect_rank_info(torchrun(5, 8, 1, 4));
  EXPECT_EQ(r.launcher, "torchrun");
  EXPECT_EQ(r.rank, 5);
  EXPECT_EQ(r.world_size, 8);
  EXPECT_EQ(r.local_rank, 1);
  EXPECT_EQ(r.local_world_size, 4);
  EXPECT_EQ(r.node_rank, 1);
  EXPECT_EQ(r.master_addr, "10.1.2.3");
  EXPECT_EQ(r.master_port, 29511);
  Env e = torchrun(5, 8, 1, 4);
  e["GROUP_RANK"] = "0";  // torchrun's own node index wins over the arithmetic
  EXPECT_EQ(detect_rank_info(e).node_rank, 0);
}

TEST(RankInfo, TorchrunWorldOfOneNeedsOnlyRankAndWorldSize) {
  const RankInfo r = detect_rank_info(Env{{"RANK", "0"}, {"WORLD_SIZE", "1"}});
  EXPECT_EQ(r.launcher, "torchrun");
  EXPECT_EQ(r.world_size, 1);
  EXPECT_EQ(r.local_world_size, 1);
  EXPECT_EQ(r.master_port, ftrun::comm::kDefaultMasterPort);
}

TEST(RankInfo, TorchrunPartialEnvNamesTheMissingVariable) {
  EXPECT_NE(error_of(Env{{"RANK", "0"}}).find("WORLD_SIZE is missing"), std::string::npos);
  EXPECT_NE(error_of(Env{{"WORLD_SIZE", "2"}}).find("RANK is missing"), std::string::npos);
  for (const char* v : {"LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
    Env e = torchrun(1, 2, 1, 2);
    e.erase(v);
    EXPECT_NE(error_of(e).find(std::string(v) + " is missing"), std::string::npos) << v << ": " << error_of(e);
  }
  // LOCAL_RANK alone is a half-set torchrun environment, not a single process.
  EXPECT_NE(error_of(Env{{"LOCAL_RANK", "0"}}).find("LOCAL_RANK is set but RANK"), std::string::npos);
}

TEST(RankInfo, TorchrunContradictionsAreErrors) {
  EXPECT_NE(error_of(torchrun(2, 2, 0, 2)).find("RANK=2 is out of range for WORLD_SIZE=2"), std::string::npos);
  EXPECT_NE(error_of(torchrun(-1, 2, 0, 2)).find("RANK=-1"), std::string::npos);
  EXPECT_NE(error_of(torchrun(0, 0, 0, 1)).find("WORLD_SIZE=0"), std::string::npos);
  EXPECT_NE(error_of(torchrun(1, 4, 2, 2)).find("LOCAL_RANK=2 is out of range for LOCAL_WORLD_SIZE=2"),
            std::string::npos);
  EXPECT_NE(error_of(torchrun(1, 2, 0, 3)).find("LOCAL_WORLD_SIZE=3"), std::string::npos);
  Env e = torchrun(1, 2, 1, 2);
  e["RANK"] = "one";
  EXPECT_NE(error_of(e).find("RANK='one' is not an integer"), std::string::npos);
  e = torchrun(1, 2, 1, 2);
  e["WORLD_SIZE"] = "2x";
  EXPECT_NE(error_of(e).find("WORLD_SIZE='2x' is not an integer"), std::string::npos);
  e = torchrun(1, 2, 1, 2);
  e["MASTER_PORT"] = "70000";
  EXPECT_NE(error_of(e).find("MASTER_PORT=70000"), std::string::npos);
  e = torchrun(1, 2, 1, 2);
  e["GROUP_RANK"] = "3";
  EXPECT_NE(error_of(e).find("GROUP_RANK=3"), std::string::npos);
}

TEST(RankInfo, OpenMpi) {
  const RankInfo r = detect_rank_info(openmpi(3, 4, 1, 2));
  EXPECT_EQ(r.launcher, "mpi");
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.world_size, 4);
  EXPECT_EQ(r.local_rank, 1);
  EXPECT_EQ(r.local_world_size, 2);
  EXPECT_EQ(r.node_rank, 1);  // rank / local size, not OMPI_COMM_WORLD_NODE_RANK
  EXPECT_EQ(r.master_addr, "");  // broadcast over MPI at rendezvous
  EXPECT_EQ(r.master_port, 0);
  Env e = openmpi(0, 2, 0, 2);
  e["MASTER_ADDR"] = "head";  // mpirun -x MASTER_ADDR -x MASTER_PORT
  e["MASTER_PORT"] = "23456";
  const RankInfo m = detect_rank_info(e);
  EXPECT_EQ(m.master_addr, "head");
  EXPECT_EQ(m.master_port, 23456);
}

TEST(RankInfo, OpenMpiPartialOrContradictoryEnvIsAnError) {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                        "OMPI_COMM_WORLD_LOCAL_SIZE"}) {
    Env e = openmpi(1, 2, 1, 2);
    e.erase(v);
    EXPECT_NE(error_of(e).find(std::string(v) + " is missing"), std::string::npos) << v << ": " << error_of(e);
  }
  EXPECT_NE(error_of(openmpi(4, 4, 0, 2)).find("OMPI_COMM_WORLD_RANK=4 is out of range"), std::string::npos);
  EXPECT_NE(error_of(openmpi(1, 4, 3, 2)).find("OMPI_COMM_WORLD_LOCAL_RANK=3"), std::string::npos);
}

TEST(RankInfo, Slurm) {
  const RankInfo r = detect_rank_info(slurm());
  EXPECT_EQ(r.launcher, "slurm");
  EXPECT_EQ(r.rank, 5);
  EXPECT_EQ(r.world_size, 8);
  EXPECT_EQ(r.local_rank, 1);
  EXPECT_EQ(r.local_world_size, 2);
  EXPECT_EQ(r.node_rank, 2);
  EXPECT_EQ(r.master_addr, "node01");
  EXPECT_EQ(r.master_port, 15000 + 3456);  // last four digits of SLURM_JOB_ID
}

TEST(RankInfo, SlurmTasksPerNodeListAndFallbacks) {
  Env e = slurm();
  e.erase("SLURM_NTASKS_PER_NODE");
  e["SLURM_TASKS_PER_NODE"] = "3(x2),2";  // nodes 0,1: 3 tasks; node 2: 2 tasks
  EXPECT_EQ(detect_rank_info(e).local_world_size, 2);
  e["SLURM_NODEID"] = "0";
  e["SLURM_PROCID"] = "2";
  e["SLURM_LOCALID"] = "2";
  EXPECT_EQ(detect_rank_info(e).local_world_size, 3);

  e = slurm();
  e.erase("SLURM_JOB_NODELIST");
  e["SLURM_NODELIST"] = "gpu[7-9]";
  EXPECT_EQ(detect_rank_info(e).master_addr, "gpu7");
  e["SLURM_STEP_NODELIST"] = "gpu[8-9]";  // rank 0 of the step runs on the step's first node
  EXPECT_EQ(detect_rank_info(e).master_addr, "gpu8");
  e["MASTER_ADDR"] = "login1";
  e["MASTER_PORT"] = "1234";
  EXPECT_EQ(detect_rank_info(e).master_addr, "login1");
  EXPECT_EQ(detect_rank_info(e).master_port, 1234);

  e = slurm();
  e.erase("SLURM_JOB_ID");
  EXPECT_EQ(detect_rank_info(e).master_port, ftrun::comm::kDefaultMasterPort);
  e["SLURM_JOBID"] = "77";
  EXPECT_EQ(detect_rank_info(e).master_port, 15077);
}

TEST(RankInfo, SlurmBatchScriptWithoutStepIsSingleProcess) {
  Env e = slurm();
  e.erase("SLURM_STEP_ID");
  EXPECT_EQ(detect_rank_info(e).launcher, "single");
  e["SLURM_STEPID"] = "3";  // the older spelling also marks an srun step
  EXPECT_EQ(detect_rank_info(e).launcher, "slurm");
}

TEST(RankInfo, SlurmPartialOrContradictoryEnvIsAnError) {
  for (const char* v : {"SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID"}) {
    Env e = slurm();
    e.erase(v);
    EXPECT_NE(error_of(e).find(std::string(v) + " is missing"), std::string::npos) << v << ": " << error_of(e);
  }
  Env e = slurm();
  e.erase("SLURM_NTASKS_PER_NODE");
  EXPECT_NE(error_of(e).find("SLURM_TASKS_PER_NODE"), std::string::npos);
  e["SLURM_TASKS_PER_NODE"] = "2(x2)";  // node 2 is not in a two-node list
  EXPECT_NE(error_of(e).find("SLURM_NODEID=2 but SLURM_TASKS_PER_NODE='2(x2)' lists only 2 node(s)"),
            std::string::npos)
      << error_of(e);
  e["SLURM_TASKS_PER_NODE"] = "2(y2)";
  EXPECT_NE(error_of(e).find("SLURM_TASKS_PER_NODE: bad tasks-per-node list"), std::string::npos) << error_of(e);

  e = slurm();
  e.erase("SLURM_JOB_NODELIST");
  EXPECT_NE(error_of(e).find("SLURM_JOB_NODELIST (or SLURM_NODELIST) is missing"), std::string::npos);
  e["SLURM_NODELIST"] = "node[3-1]";
  EXPECT_NE(error_of(e).find("SLURM_NODELIST: range '3-1' runs backwards"), std::string::npos) << error_of(e);

  e = slurm();
  e["SLURM_PROCID"] = "8";
  EXPECT_NE(error_of(e).find("SLURM_PROCID=8 is out of range for SLURM_NTASKS=8"), std::string::npos);
  e = slurm();
  e["SLURM_LOCALID"] = "2";
  EXPECT_NE(error_of(e).find("SLURM_LOCALID=2 is out of range for SLURM_NTASKS_PER_NODE=2"), std::string::npos);
}

TEST(RankInfo, PrecedenceTorchrunThenOpenMpiThenSlurm) {
  Env all = slurm();
  for (const auto& kv : openmpi(1, 2, 1, 2)) all.insert(kv);
  EXPECT_EQ(detect_rank_info(all).launcher, "mpi");
  EXPECT_EQ(detect_rank_info(all).world_size, 2);
  for (const auto& kv : torchrun(3, 4, 1, 2)) all.insert(kv);
  const RankInfo r = detect_rank_info(all);
  EXPECT_EQ(r.launcher, "torchrun");
  EXPECT_EQ(r.rank, 3);
  EXPECT_EQ(r.world_size, 4);
  // A broken higher-precedence launcher is an error, not a fall-through to the next one.
  all.erase("WORLD_SIZE");
  EXPECT_NE(error_of(all).find("WORLD_SIZE is missing"), std::string::npos);
}

TEST(RankInfo, DescribeAndRealEnvironment) {
  EXPECT_EQ(ftrun::comm::describe(detect_rank_info(torchrun(5, 8, 1, 4))),
            "rank 5/8 (local 1/4, node 1) via torchrun, master 10.1.2.3:29511");
  EXPECT_EQ(ftrun::comm::describe(detect_rank_info(openmpi(1, 2, 1, 2))),
            "rank 1/2 (local 1/2, node 0) via mpi, master <broadcast over MPI>:<chosen by rank 0>");
  // The real environment of this test process (ctest sets no launcher variables).
  const auto env = ftrun::comm::environment_map();
  EXPECT_EQ(env.count("PATH"), 1u);
  EXPECT_EQ(detect_rank_info().launcher, detect_rank_info(env).launcher);
}
