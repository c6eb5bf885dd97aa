// Slurm's compressed host lists and tasks-per-node strings, expanded as `scontrol show
// hostnames` does: ranges, zero padding, comma lists inside brackets, several bracket groups.
#include <gtest/gtest.h>

#include "comm/rank_info.h"

using ftrun::comm::expand_slurm_hostlist;
using ftrun::comm::expand_slurm_tasks_per_node;
using V = std::vector<std::string>;

TEST(Hostlist, PlainNamesAndCommaLists) {
  EXPECT_EQ(expand_slurm_hostlist("login1"), V{"login1"});
  EXPECT_EQ(expand_slurm_hostlist("a,b-2,c.example.org"), (V{"a", "b-2", "c.example.org"}));
  EXPECT_EQ(expand_slurm_hostlist(""), V{});
  EXPECT_EQ(expand_slurm_hostlist(" a , b "), (V{"a", "b"}));
}

TEST(Hostlist, Ranges) {
  EXPECT_EQ(expand_slurm_hostlist("node[1-3]"), (V{"node1", "node2", "node3"}));
  EXPECT_EQ(expand_slurm_hostlist("node[5]"), V{"node5"});
  EXPECT_EQ(expand_slurm_hostlist("gnode[10,20,25,37]"), (V{"gnode10", "gnode20", "gnode25", "gnode37"}));
  EXPECT_EQ(expand_slurm_hostlist("node[8-11]"), (V{"node8", "node9", "node10", "node11"}));
}

TEST(Hostlist, ZeroPaddingFollowsTheFirstBound) {
  EXPECT_EQ(expand_slurm_hostlist("node[01-03]"), (V{"node01", "node02", "node03"}));
  EXPECT_EQ(expand_slurm_hostlist("n[098-101]"), (V{"n098", "n099", "n100", "n101"}));
  EXPECT_EQ(expand_slurm_hostlist("n[001,010,100]"), (V{"n001", "n010", "n100"}));
}

TEST(Hostlist, MixedItemsAndSeveralBracketGroups) {
  EXPECT_EQ(expand_slurm_hostlist("node[01-03,07],gpu5"), (V{"node01", "node02", "node03", "node07", "gpu5"}));
  EXPECT_EQ(expand_slurm_hostlist("rack[1-2]-n[01-02]"), (V{"rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"}));
  EXPECT_EQ(expand_slurm_hostlist("a[1-2]b,c[3]d[4,6]"), (V{"a1b", "a2b", "c3d4", "c3d6"}));
  EXPECT_EQ(expand_slurm_hostlist("x[1-2],y,z[09-10]"), (V{"x1", "x2", "y", "z09", "z10"}));
}

TEST(Hostlist, MalformedListsAreErrors) {
  for (const char* bad : {"node[1-3", "node1-3]", "node[3-1]", "node[a-b]", "node[]", "node[1,]", "node[[1]]",
                          "a,,b", "[1-2]", "node[1--2]", "node[-2]"}) {
    EXPECT_THROW(expand_slurm_hostlist(bad), std::runtime_error) << bad;
  }
  try {
    expand_slurm_hostlist("node[3-1]");
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'3-1'"), std::string::npos) << e.what();
  }
}

TEST(TasksPerNode, Expand) {
  EXPECT_EQ(expand_slurm_tasks_per_node("4"), std::vector<int>{4});
  EXPECT_EQ(expand_slurm_tasks_per_node("2(x3),1"), (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(expand_slurm_tasks_per_node("4(x2)"), (std::vector<int>{4, 4}));
  EXPECT_EQ(expand_slurm_tasks_per_node("1,3(x2),2"), (std::vector<int>{1, 3, 3, 2}));
  for (const char* bad : {"", "x", "2(x)", "2(3)", "2(x3", "2,", "-1", "2(x3)1"})
    EXPECT_THROW(expand_slurm_tasks_per_node(bad), std::runtime_error) << bad;
}
