// launch/slurm/train.sbatch on a real Slurm: the test starts a single-node cluster of its
// own (munged, slurmctld and slurmd from Debian, as root, with every file in a temporary folder
// and free ports, so a system-wide /etc/slurm or a running Slurm is never touched), submits the
// script with the tiny config under `srun --mpi=pmix`, checks that the job trains, checkpoints and
// exits 0, that a second submission with the same --save-dir resumes from that checkpoint, and
// that SIGUSR1 to the batch shell (what --signal=B:USR1@120 sends before the time limit) makes
// the job checkpoint, requeue itself and resume. The daemons are stopped by their PIDs afterwards,
// whatever happened.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <sstream>
#include <thread>
#include <vector>

#include "support/process.h"

namespace tls::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A daemon's full path: PATH, then the sbin folders (slurmctld, slurmd and munged live in
// /usr/sbin, which a user's PATH may lack). Empty when not installed.
std::string find_program(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::stringstream in(path);
    for (std::string d; std::getline(in, d, ':');) dirs.push_back(d);
  }
  for (const char* d : {"/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"})
    dirs.push_back(d);
  for (const std::string& d : dirs)
    if (!d.empty() && access((d + "/" + name).c_str(), X_OK) == 0) return d + "/" + name;
  return "";
}

// Two TCP ports nobody listens on now (held open together so they differ).
std::vector<int> free_ports(int count) {
  std::vector<int> fds, ports;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      break;
    fds.push_back(fd);
    ports.push_back(ntohs(a.sin_port));
  }
  for (int fd : fds) close(fd);
  return ports;
}

std::string short_hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  std::string h(buf);
  return h.substr(0, h.find('.'));
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string tail(const std::string& text, size_t bytes = 3000) {
  return text.size() <= bytes ? text : "..." + text.substr(text.size() - bytes);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

bool wait_until(int seconds, const std::function<bool()>& done) {
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return done();
}

struct Daemon {
  std::string name, log;
  pid_t pid = -1;
};

class Slurm : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> missing;
    for (const char* p : {"munged", "slurmctld", "slurmd", "sbatch", "srun", "sinfo", "scontrol",
                          "scancel", "squeue"}) {
      programs_[p] = find_program(p);
      if (programs_[p].empty()) missing.push_back(p);
    }
    std::string names;
    for (const std::string& m : missing) names += " " + m;
    ASSERT_TRUE(missing.empty())
        << "Slurm is not installed (missing:" << names
        << "): run `bash launch/setup.sh deps` (Debian's slurmctld, slurmd, "
           "slurm-client, munge and libpmix-dev)";
    ASSERT_EQ(geteuid(), 0u)
        << "this test runs munged, slurmctld and slurmd as root (SlurmUser=root): run it as root";
    ASSERT_TRUE(fs::exists(corpus()))
        << "the default corpus is missing: run launch/prepare_corpus.sh data/kernel-docs";
    ASSERT_TRUE(fs::exists(tls_dist_binary())) << tls_dist_binary();

    // A short path in /tmp: Unix sockets (munge's, slurmd's step sockets, PMIx's) allow 107 bytes.
    std::string templ = (fs::temp_directory_path() / "tls_slurm.XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << templ;
    dir_ = templ;
    fs::permissions(dir_, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
    for (const char* d : {"munge", "state", "spool", "pmix"})
      fs::create_directories(dir_ + "/" + d);
    // munged: its socket folder must be searchable by all and writable by its owner only.
    fs::permissions(dir_ + "/munge", fs::perms::owner_all | fs::perms::group_read |
                                         fs::perms::group_exec | fs::perms::others_read |
                                         fs::perms::others_exec);
    conf_ = dir_ + "/slurm.conf";
    node_ = short_hostname();
    ASSERT_FALSE(node_.empty());
    if (slurm_nodes().size() > 1)
      for (const std::string& n : slurm_nodes())
        for (const char* d : {"spool-", "conf-", "pmix-", "shm-"})
          fs::create_directories(dir_ + "/" + d + n);

    StartMunge();
    if (HasFatalFailure()) return;
    WriteConfig();
    if (HasFatalFailure()) return;
    StartSlurm();
  }

  void TearDown() override {
    // Jobs first (so that no slurmstepd or rank outlives the cluster), then the daemons, by PID.
    if (Alive("slurmctld")) {
      Client("scancel --user=root", 20);
      wait_until(20, [&] { return Client("squeue -h", 10).output.empty(); });
    }
    for (const Daemon& d : std::vector<Daemon>(daemons_))
      if (d.name.rfind("slurmd", 0) == 0) Stop(d.name);
    for (const char* name : {"slurmctld", "munged"}) Stop(name);
    if (!dir_.empty()) {
      if (HasFailure()) {
        std::cout << "[slurm] logs kept in " << dir_ << "\n";
      } else {
        std::error_code ec;
        fs::remove_all(dir_, ec);
      }
    }
  }

  static std::string corpus() { return source_path("data/kernel-docs/train.txt"); }

  // A Slurm client command (or any shell command) pointed at this test's cluster only.
  ProcessResult Client(const std::string& command, int timeout_seconds) {
    return run_command(
        "cd " + quote(dir_) + " && export SLURM_CONF=" + quote(conf_) + " && " + command,
        timeout_seconds);
  }

  void Spawn(const std::string& name, const std::vector<std::string>& argv) {
    Daemon d{name, dir_ + "/" + name + ".stdout"};
    const pid_t pid = fork();
    ASSERT_GE(pid, 0) << "fork failed";
    if (pid == 0) {
      const int fd = open(d.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int null = open("/dev/null", O_RDONLY);
      if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
      if (null >= 0) dup2(null, 0);
      setenv("SLURM_CONF", conf_.c_str(), 1);
      std::vector<char*> args;
      for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    d.pid = pid;
    daemons_.push_back(d);
  }

  Daemon* Find(const std::string& name) {
    for (Daemon& d : daemons_)
      if (d.name == name) return &d;
    return nullptr;
  }

  bool Alive(const std::string& name) {
    Daemon* d = Find(name);
    if (!d || d->pid <= 0) return false;
    int status = 0;
    if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
      d->pid = -1;
      return false;
    }
    return true;
  }

  void Stop(const std::string& name) {
    if (!Alive(name)) return;
    Daemon* d = Find(name);
    kill(d->pid, SIGTERM);
    if (!wait_until(15, [&] { return !Alive(name); })) {
      kill(d->pid, SIGKILL);
      waitpid(d->pid, nullptr, 0);
      d->pid = -1;
    }
  }

  // What a daemon wrote, for failure messages.
  std::string Logs(const std::string& name) {
    return "--- " + name + " stdout/stderr:\n" + tail(read_file(dir_ + "/" + name + ".stdout")) +
           "\n--- " + name + ".log:\n" + tail(read_file(dir_ + "/" + name + ".log"));
  }

  void StartMunge() {
    const std::string key = dir_ + "/munge/munge.key";
    {
      std::ifstream random("/dev/urandom", std::ios::binary);
      std::string bytes(1024, '\0');
      random.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      ASSERT_TRUE(random) << "cannot read /dev/urandom";
      write_file(key, bytes);
    }
    fs::permissions(key, fs::perms::owner_read);
    socket_ = dir_ + "/munge/munge.socket";
    Spawn("munged",
          {programs_["munged"], "--foreground", "--socket=" + socket_, "--key-file=" + key,
           "--pid-file=" + dir_ + "/munge/munged.pid", "--log-file=" + dir_ + "/munged.log",
           "--seed-file=" + dir_ + "/munge/munged.seed"});
    const bool up = wait_until(20, [&] {
      return !Alive("munged") ||
             run_command("munge -n -S " + quote(socket_) + " | unmunge -S " + quote(socket_), 10)
                     .exit_code == 0;
    });
    ASSERT_TRUE(up && Alive("munged")) << "munged did not start\n" << Logs("munged");
  }

  void WriteConfig() {
    // The node's hardware as slurmd sees it (CPUs, sockets, cores, threads, memory).
    ProcessResult hw = run_command(quote(programs_["slurmd"]) + " -C", 30);
    ASSERT_EQ(hw.exit_code, 0) << hw.output;
    std::string hardware;
    for (const char* field :
         {"CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory"}) {
      std::smatch m;
      if (std::regex_search(hw.output, m, std::regex(std::string("\\b") + field + "=([0-9]+)")))
        hardware += std::string(" ") + field + "=" + m[1].str();
    }
    ASSERT_NE(hardware.find("CPUs="), std::string::npos) << "slurmd -C: " << hw.output;
    const std::vector<std::string> nodes = slurm_nodes();
    const std::vector<int> ports = free_ports(2 + static_cast<int>(nodes.size()));
    ASSERT_EQ(ports.size(), 2 + nodes.size());
    // One node: this machine under its own name. Several: slurmd daemons of their own names and
    // ports on this machine (Debian builds Slurm with --enable-multiple-slurmd), each node the
    // whole machine; %n in the paths is the node's name.
    std::string node_lines, node_list;
    for (size_t i = 0; i < nodes.size(); ++i) {
      node_lines += "NodeName=" + nodes[i] + " NodeAddr=127.0.0.1" + hardware;
      if (nodes.size() > 1)
        node_lines += " NodeHostname=" + nodes[i] + " Port=" + std::to_string(ports[2 + i]);
      node_lines += " State=UNKNOWN\n";
      node_list += (i ? "," : "") + nodes[i];
    }
    const std::string each = nodes.size() > 1 ? "-%n" : "";
    write_file(dir_ + "/plugstack.conf", "");
    std::ostringstream c;
    c << "# A single-node cluster for tests/launch/slurm_test.cpp; every path in " << dir_ << "\n"
      << "ClusterName=tlstest\n"
      << "SlurmctldHost=" << node_ << "(127.0.0.1)\n"
      << "SlurmctldPort=" << ports[0] << "\nSlurmdPort=" << ports[1] << "\n"
      << "SlurmUser=root\nSlurmdUser=root\n"
      << "AuthType=auth/munge\nCredType=cred/munge\n"
      // cred_expire: a requeued job waits this long (default 120 s) before it may start again.
      << "AuthInfo=socket=" << socket_ << ",cred_expire=15\n"
      << "StateSaveLocation=" << dir_ << "/state\nSlurmdSpoolDir=" << dir_ << "/spool" << each
      << "\nSlurmctldPidFile=" << dir_ << "/slurmctld.pid\nSlurmdPidFile=" << dir_ << "/slurmd"
      << each << ".pid\nSlurmctldLogFile=" << dir_ << "/slurmctld.log\nSlurmdLogFile=" << dir_
      << "/slurmd" << each << ".log\n"
      << "SlurmctldDebug=info\nSlurmdDebug=info\n"
      << "PlugStackConfig=" << dir_ << "/plugstack.conf\n"
      << "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
      << "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
      << "JobCompType=jobcomp/none\n"
      << "SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n"
      << "SchedulerType=sched/builtin\nMpiDefault=none\n"
      << "SlurmdParameters=config_overrides\nReturnToService=2\n"
      << "MailProg=/bin/true\nKillWait=5\nMinJobAge=600\nInactiveLimit=0\n"
      // Job ids name the PMIx namespace (slurm.pmix.<job>.<step>), hence Open MPI's shared-memory
      // segments and /tmp/spmix_appdir_* folders: start far from 1 so that another run of this
      // test, or another Slurm on the machine, does not share them.
      << "FirstJobId="
      << 10000 +
             (static_cast<unsigned>(getpid()) * 7919u + static_cast<unsigned>(ports[0])) % 50000000u
      << "\n"
      << node_lines << "PartitionName=test Nodes=" << node_list
      << " Default=YES MaxTime=INFINITE State=UP\n";
    write_file(conf_, c.str());
    // Each node's slurmd reads its own copy, beside an mpi.conf that gives its PMIx clients a
    // folder of their own: the step's folder (spmix_appdir_<uid>_<job>.<step>) is named without
    // the node, so two nodes on one machine would collide in /tmp.
    if (nodes.size() > 1)
      for (const std::string& n : nodes) {
        write_file(dir_ + "/conf-" + n + "/slurm.conf", c.str());
        write_file(dir_ + "/conf-" + n + "/mpi.conf",
                   "PMIxCliTmpDirBase=" + dir_ + "/pmix-" + n + "\n");
      }
  }

  void StartSlurm() {
    Spawn("slurmctld", {programs_["slurmctld"], "-D", "-f", conf_});
    const bool ctld = wait_until(30, [&] {
      return !Alive("slurmctld") ||
             Client("scontrol ping", 10).output.find("UP") != std::string::npos;
    });
    ASSERT_TRUE(ctld && Alive("slurmctld")) << "slurmctld did not come up\n" << Logs("slurmctld");
    const std::vector<std::string> nodes = slurm_nodes();
    for (const std::string& n : nodes)
      Spawn(slurmd_name(n),
            {programs_["slurmd"], "-D", "-f",
             nodes.size() > 1 ? dir_ + "/conf-" + n + "/slurm.conf" : conf_, "-N", n});
    auto all_alive = [&] {
      for (const std::string& n : nodes)
        if (!Alive(slurmd_name(n))) return false;
      return true;
    };
    std::string state;
    const bool idle = wait_until(40, [&] {
      state = Client("sinfo -h -N -o %t", 10).output;
      size_t idle_nodes = 0;
      for (size_t at = state.find("idle"); at != std::string::npos; at = state.find("idle", at + 1))
        ++idle_nodes;
      return !all_alive() || idle_nodes == nodes.size();
    });
    ASSERT_TRUE(idle && all_alive()) << "the nodes are not idle: " << state << "\n"
                                     << Diagnostics() << "\n"
                                     << Logs("slurmctld");
    ProcessResult mpi = Client("srun --mpi=list", 30);
    ASSERT_NE(mpi.output.find("pmix"), std::string::npos)
        << "Slurm has no PMIx plugin (slurm-wlm-basic-plugins's mpi_pmix needs libpmix.so from "
           "libpmix-dev):\n"
        << mpi.output;
  }

  // sbatch of the training script with the tiny config; returns the job id (-1 on failure).
  std::string Sbatch(const std::string& options, const std::string& train_args) {
    // Single-copy (CMA) shared-memory transfers need ptrace rights between the ranks, which
    // containers may withhold; plain copies work everywhere.
    return "OMPI_MCA_btl_vader_single_copy_mechanism=none TLS_DIST=" + quote(tls_dist_binary()) +
           " sbatch --parsable " + options + " -n 2 --ntasks-per-node=2 " +
           quote(source_path("launch/slurm/train.sbatch")) + " --config " +
           quote(source_path("launch/tiny_demo.ini")) +
           " --validate-interval 0 --log-interval 5 --save-interval 10 --train-data " +
           quote(corpus()) + " --save-dir " + quote(run_dir()) + train_args;
  }

  std::string run_dir() const { return dir_ + "/run"; }
  std::string job_output(const std::string& id) {
    return read_file(dir_ + "/tls_dist-" + id + ".out");
  }
  static std::string job_id(const std::string& sbatch_output) {
    std::smatch m;
    return std::regex_search(sbatch_output, m, std::regex("(^|\\n)([0-9]+)")) ? m[2].str() : "";
  }
  std::string Diagnostics() {
    std::string text;
    for (const std::string& n : slurm_nodes()) text += Logs(slurmd_name(n)) + "\n";
    return text + Logs("slurmctld");
  }

  // The cluster's nodes: this machine, or what a fixture of several nodes names.
  virtual std::vector<std::string> slurm_nodes() const { return {node_}; }
  std::string slurmd_name(const std::string& node) const {
    return slurm_nodes().size() > 1 ? "slurmd-" + node : "slurmd";
  }

  std::map<std::string, std::string> programs_;
  std::vector<Daemon> daemons_;
  std::string dir_, conf_, socket_, node_;
};

TEST_F(Slurm, TrainSbatchTrainsCheckpointsResumesAndRequeuesOnTheTimeLimitSignal) {
  // 1. A fresh run: 20 updates, checkpoints at 10 and 20.
  ProcessResult first = Client(Sbatch("--wait", " --max-update 20"), 90);
  const std::string id1 = job_id(first.output);
  ASSERT_FALSE(id1.empty()) << first.output << Diagnostics();
  const std::string out1 = job_output(id1);
  ASSERT_EQ(first.exit_code, 0) << first.output << "\n--- job output:\n" << out1 << Diagnostics();
  EXPECT_NE(out1.find("tls_dist train: "), std::string::npos) << out1;
  EXPECT_NE(out1.find("dp=2"), std::string::npos)
      << "the two srun tasks did not form one MPI world:\n"
      << out1;
  EXPECT_NE(out1.find("saved " + run_dir() + "/checkpoint_20.h5"), std::string::npos) << out1;
  ASSERT_TRUE(fs::exists(run_dir() + "/checkpoint_20.h5")) << out1;
  ASSERT_TRUE(fs::exists(run_dir() + "/checkpoint_last.h5")) << out1;
  EXPECT_NE(read_file(run_dir() + "/metrics.jsonl").find("\"step\": 20"), std::string::npos);

  // 2. The same --save-dir again: it resumes from update 20 and goes on to 30.
  ProcessResult second = Client(Sbatch("--wait", " --max-update 30"), 90);
  const std::string id2 = job_id(second.output);
  ASSERT_FALSE(id2.empty()) << second.output << Diagnostics();
  const std::string out2 = job_output(id2);
  ASSERT_EQ(second.exit_code, 0) << second.output << "\n--- job output:\n" << out2 << Diagnostics();
  EXPECT_TRUE(std::regex_search(out2, std::regex("resumed from \\S+ at update 20"))) << out2;
  ASSERT_TRUE(fs::exists(run_dir() + "/checkpoint_30.h5")) << out2;

  // 3. What --signal=B:USR1@120 does before the time limit, sent now: SIGUSR1 to the batch shell.
  // Every rank checkpoints and stops, the job requeues itself and its next start resumes.
  ProcessResult third = Client(Sbatch("", " --max-update 60 --log-interval 1"), 60);
  const std::string id3 = job_id(third.output);
  ASSERT_EQ(third.exit_code, 0) << third.output << Diagnostics();
  ASSERT_FALSE(id3.empty()) << third.output;
  const bool training = wait_until(60, [&] {
    return job_output(id3).find("\"step\": 33") != std::string::npos ||
           read_file(run_dir() + "/metrics.jsonl").find("\"step\": 33") != std::string::npos;
  });
  ASSERT_TRUE(training) << job_output(id3) << Diagnostics();
  ProcessResult signal = Client("scancel --batch --signal=USR1 " + id3, 20);
  ASSERT_EQ(signal.exit_code, 0) << signal.output;
  std::string state;
  const bool done = wait_until(90, [&] {
    state = Client("scontrol show job " + id3, 10).output;
    return state.find("JobState=COMPLETED") != std::string::npos ||
           state.find("JobState=FAILED") != std::string::npos ||
           state.find("JobState=CANCELLED") != std::string::npos;
  });
  const std::string out3 = job_output(id3);
  ASSERT_TRUE(done) << state << "\n--- job output:\n" << out3 << Diagnostics();
  EXPECT_NE(state.find("JobState=COMPLETED"), std::string::npos) << state << out3;
  EXPECT_NE(state.find("Restarts=1"), std::string::npos) << state << out3;
  std::smatch stop;
  ASSERT_TRUE(std::regex_search(out3, stop, std::regex("stopping on signal 10 at update ([0-9]+)")))
      << out3;
  const std::string stopped = stop[1].str();
  // (keep-last = 2 in the tiny config: the checkpoints at 50 and 60 replace it on disk later.)
  EXPECT_NE(out3.find("saved " + run_dir() + "/checkpoint_" + stopped + ".h5"), std::string::npos)
      << out3;
  EXPECT_NE(out3.find("requeueing job " + id3), std::string::npos) << out3;
  EXPECT_TRUE(std::regex_search(out3, std::regex("resumed from \\S+ at update " + stopped)))
      << out3;
  EXPECT_TRUE(fs::exists(run_dir() + "/checkpoint_60.h5")) << out3;
}

// Two Slurm nodes on this machine, n1 and n2 (two slurmd daemons with their own names and ports):
// `srun -N 2 --ntasks-per-node 2 tls_dist train --tp 2 --sp 2` puts each tensor-parallel group
// (world ranks 2k, 2k+1) on one node and the sequence-parallel pairs across the nodes. Open MPI
// takes the nodes for separate hosts (PMIx tells each rank its node's peers): ranks on different
// nodes talk over TCP; shared memory serves only a node's own ranks. The run, in float64, logs
// the same loss at every update as one process.
class TwoNodeSlurm : public Slurm {
 protected:
  std::vector<std::string> slurm_nodes() const override { return {"n1", "n2"}; }
};

std::vector<double> logged_losses(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(metrics);
  std::smatch m;
  for (std::string line; std::getline(in, line);)
    if (line.find("\"split\"") == std::string::npos &&
        std::regex_search(line, m, std::regex("\"loss\": ([-+0-9.eE]+)")))
      out.push_back(std::stod(m[1].str()));
  return out;
}

TEST_F(TwoNodeSlurm, TpTimesSpAcrossTwoNodesTrainsAsOneProcessDoes) {
  const std::string train =
      " train --config " + quote(source_path("launch/tiny_demo.ini")) +
      " --precision fp64 --max-update 4 --log-interval 1 --validate-interval 0 --save-interval 0"
      " --train-data " +
      quote(corpus());
  // Each node's shared-memory segments in a folder of its own: Open MPI names them after the
  // host name, which both nodes share here.
  const std::string rank_script =
      "echo \"[rank] $SLURM_PROCID on $SLURMD_NODENAME\"; "
      "export OMPI_MCA_btl_vader_backing_directory=" +
      dir_ + "/shm-$SLURMD_NODENAME; exec " + quote(tls_dist_binary()) + train + " --tp 2 --sp 2" +
      " --save-dir " + quote(dir_ + "/two_nodes");
  // Each node offers all of this machine's cores, so Open MPI sees no oversubscription and
  // would spin in every wait: four spinning ranks on two cores make the checkpoint's hundreds of
  // small collectives take minutes. yield_when_idle lets a waiting rank give up its core.
  ProcessResult two = Client(
      "OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_btl_vader_single_copy_mechanism=none srun -N 2 "
      "--ntasks-per-node 2 --mpi=pmix "
      "--kill-on-bad-exit=1 bash -c " +
          quote(rank_script),
      120);
  ASSERT_EQ(two.exit_code, 0) << two.output << Diagnostics();
  for (const char* placed :
       {"[rank] 0 on n1", "[rank] 1 on n1", "[rank] 2 on n2", "[rank] 3 on n2"})
    EXPECT_NE(two.output.find(placed), std::string::npos) << placed << "\n" << two.output;
  EXPECT_NE(two.output.find("tp=2 sp=2 dp=1"), std::string::npos) << two.output;

  // The nodes are separate hosts to Open MPI: with shared memory as the only transport, ranks on
  // different nodes cannot reach each other and the job fails.
  ProcessResult no_tcp = Client(
      "OMPI_MCA_btl=self,vader OMPI_MCA_mpi_yield_when_idle=1 "
      "OMPI_MCA_btl_vader_single_copy_mechanism=none srun -N 2 --ntasks-per-node 2 --mpi=pmix "
      "--kill-on-bad-exit=1 bash -c " +
          quote("export OMPI_MCA_btl_vader_backing_directory=" + dir_ +
                "/shm-$SLURMD_NODENAME; exec " + quote(tls_dist_binary()) + train +
                " --max-update 1 --tp 2 --sp 2 --save-dir " + quote(dir_ + "/no_tcp")),
      60);
  EXPECT_NE(no_tcp.exit_code, 0) << no_tcp.output;
  EXPECT_NE(no_tcp.exit_code, 124) << "timed out instead of failing at once\n" << no_tcp.output;

  ProcessResult one = run_command(
      "mpirun -n 1 " + tls_dist_binary() + train + " --save-dir " + quote(dir_ + "/one_process"),
      120);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const std::vector<double> a = logged_losses(read_file(dir_ + "/two_nodes/metrics.jsonl")),
                            b = logged_losses(read_file(dir_ + "/one_process/metrics.jsonl"));
  ASSERT_EQ(a.size(), 4u) << two.output;
  ASSERT_EQ(b.size(), 4u) << one.output;
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_NEAR(a[i], b[i], 1e-10 * std::abs(b[i])) << "update " << i + 1;
}

// Each update's loss after update `after`, in metrics.jsonl's order.
std::vector<double> losses_after(const std::string& metrics, int64_t after) {
  std::vector<double> out;
  std::istringstream in(metrics);
  std::smatch step, loss;
  for (std::string line; std::getline(in, line);)
    if (line.find("\"split\"") == std::string::npos &&
        std::regex_search(line, step, std::regex("\"step\": ([0-9]+)")) &&
        std::stoll(step[1].str()) > after &&
        std::regex_search(line, loss, std::regex("\"loss\": ([-+0-9.eE]+)")))
      out.push_back(std::stod(loss[1].str()));
  return out;
}

// A job trained and saved across two nodes (tp 2 x sp 2) resumes on one node in another layout
// (tp 1, sp 1, dp 2: every split of the saved tensors and caches changes) and trains on as one
// process does from the same checkpoint, and as one process does that never stopped (float64).
TEST_F(TwoNodeSlurm, ACheckpointOfTwoNodesResumesOnOneNodeInAnotherLayout) {
  const std::string train =
      " train --config " + quote(source_path("launch/tiny_demo.ini")) +
      " --precision fp64 --log-interval 1 --validate-interval 0 --save-interval 0 --train-data " +
      quote(corpus());
  auto srun = [&](const std::string& nodes, const std::string& args) {
    return Client(
        "OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_btl_vader_single_copy_mechanism=none srun " +
            nodes + " --mpi=pmix --kill-on-bad-exit=1 bash -c " +
            quote("echo \"[rank] $SLURM_PROCID on $SLURMD_NODENAME\"; "
                  "export OMPI_MCA_btl_vader_backing_directory=" +
                  dir_ + "/shm-$SLURMD_NODENAME; exec " + quote(tls_dist_binary()) + train + args),
        120);
  };
  const std::string saved = dir_ + "/two_nodes";
  ProcessResult two =
      srun("-N 2 --ntasks-per-node 2", " --max-update 4 --tp 2 --sp 2 --save-dir " + quote(saved));
  ASSERT_EQ(two.exit_code, 0) << two.output << Diagnostics();
  EXPECT_NE(two.output.find("[rank] 3 on n2"), std::string::npos) << two.output;
  ASSERT_TRUE(fs::exists(saved + "/checkpoint_4.h5")) << two.output;

  // The same checkpoint in two save directories: one resumes on n1 alone, one in one process.
  const std::string on_one_node = dir_ + "/one_node", one_process = dir_ + "/one_process";
  fs::copy(saved, on_one_node, fs::copy_options::recursive);
  fs::copy(saved, one_process, fs::copy_options::recursive);
  ProcessResult resumed =
      srun("-N 1 -w n1 -n 2", " --max-update 8 --tp 1 --sp 1 --save-dir " + quote(on_one_node));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output << Diagnostics();
  EXPECT_NE(resumed.output.find("[rank] 1 on n1"), std::string::npos) << resumed.output;
  EXPECT_TRUE(std::regex_search(resumed.output, std::regex("resumed from \\S+ at update 4")))
      << resumed.output;
  EXPECT_NE(resumed.output.find("tp=1 sp=1 dp=2"), std::string::npos) << resumed.output;
  ProcessResult alone = run_command(
      "mpirun -n 1 " + tls_dist_binary() + train + " --max-update 8 --save-dir " + one_process,
      120);
  ASSERT_EQ(alone.exit_code, 0) << alone.output;
  EXPECT_TRUE(std::regex_search(alone.output, std::regex("resumed from \\S+ at update 4")))
      << alone.output;
  ProcessResult uninterrupted = run_command("mpirun -n 1 " + tls_dist_binary() + train +
                                                " --max-update 8 --save-dir " + dir_ + "/straight",
                                            120);
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.output;

  const std::vector<double> a = losses_after(read_file(on_one_node + "/metrics.jsonl"), 4),
                            b = losses_after(read_file(one_process + "/metrics.jsonl"), 4),
                            c = losses_after(read_file(dir_ + "/straight/metrics.jsonl"), 4);
  ASSERT_EQ(a.size(), 4u) << resumed.output;
  ASSERT_EQ(b.size(), 4u) << alone.output;
  ASSERT_EQ(c.size(), 4u) << uninterrupted.output;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i], b[i], 1e-10 * std::abs(b[i])) << "update " << i + 5;
    EXPECT_NEAR(a[i], c[i], 1e-10 * std::abs(c[i])) << "update " << i + 5;
  }
}

// A rank's pid, node and Slurm task id, from the files the rank wrapper of TwoNodeSlurm writes.
struct RankProcess {
  pid_t pid = -1;
  std::string node;
};

std::vector<RankProcess> rank_processes(const std::string& folder) {
  std::vector<RankProcess> out;
  if (!fs::exists(folder)) return out;
  for (const auto& f : fs::directory_iterator(folder)) {
    const std::string name = f.path().filename().string();  // <node>.<task>
    out.push_back({static_cast<pid_t>(std::stol(read_file(f.path().string()))),
                   name.substr(0, name.find('.'))});
  }
  return out;
}

// The highest "step" in metrics.jsonl (0 when none).
int64_t last_step(const std::string& metrics) {
  int64_t step = 0;
  std::smatch m;
  std::istringstream in(metrics);
  for (std::string line; std::getline(in, line);)
    if (std::regex_search(line, m, std::regex("\"step\": ([0-9]+)")))
      step = std::max<int64_t>(step, std::stoll(m[1].str()));
  return step;
}

// A node fails in mid-training, two ways. (1) It dies: SIGKILL to every rank on n2 (a crash, an
// OOM kill). Slurm sees the tasks die and launch/slurm/train.sbatch's srun --kill-on-bad-exit=1
// ends the step's other tasks at once. (2) It freezes: SIGSTOP to n2's ranks (a hung node, a
// stuck file system). Nothing dies, so neither Slurm nor Open MPI notices, and n1's ranks would
// wait in a collective forever; their stall watchdog (--stall-timeout) ends them, and
// --kill-on-bad-exit then the rest. Either way the job fails (non-zero) within 30 s, and its last
// checkpoint, written before the failure, loads.
TEST_F(TwoNodeSlurm, ANodeThatDiesOrFreezesEndsTheJobWithin30SecondsAndTheLastCheckpointLoads) {
  // The training script itself, its ranks through a wrapper that records their pids and gives
  // each node its own shared-memory folder (both nodes have this machine's host name).
  const std::string wrapper = dir_ + "/rank.sh";
  write_file(wrapper,
             "#!/bin/bash\necho $$ > $TLS_PIDS/$SLURMD_NODENAME.$SLURM_PROCID\n"
             "export OMPI_MCA_btl_vader_backing_directory=" +
                 dir_ + "/shm-$SLURMD_NODENAME\nexec " + quote(tls_dist_binary()) + " \"$@\"\n");
  fs::permissions(wrapper, fs::perms::owner_all);
  const std::string valid = dir_ + "/valid.txt";
  write_file(valid, read_file(corpus()).substr(0, 4000));

  for (const bool frozen : {false, true}) {
    SCOPED_TRACE(frozen ? "n2's ranks stopped" : "n2's ranks killed");
    const std::string run = dir_ + (frozen ? "/frozen" : "/killed"), pids = run + ".pids";
    fs::create_directories(pids);
    ProcessResult submit = Client(
        "OMPI_MCA_mpi_yield_when_idle=1 OMPI_MCA_btl_vader_single_copy_mechanism=none TLS_PIDS=" +
            quote(pids) + " TLS_DIST=" + quote(wrapper) + " sbatch --parsable -N 2 " +
            "--ntasks-per-node=2 " + quote(source_path("launch/slurm/train.sbatch")) +
            " --config " + quote(source_path("launch/tiny_demo.ini")) +
            " --tp 2 --sp 2 --max-update 100000 --validate-interval 0 --log-interval 1"
            " --save-interval 5 --stall-timeout 10 --train-data " +
            quote(corpus()) + " --save-dir " + quote(run),
        30);
    const std::string id = job_id(submit.output);
    ASSERT_EQ(submit.exit_code, 0) << submit.output << Diagnostics();
    ASSERT_FALSE(id.empty()) << submit.output;
    // Mid-training, past a checkpoint: the 5-update checkpoint is durable and named by
    // checkpoint_last.h5, and training has gone on.
    const bool trained = wait_until(90, [&] {
      return fs::exists(run + "/checkpoint_last.h5") &&
             last_step(read_file(run + "/metrics.jsonl")) >= 7;
    });
    ASSERT_TRUE(trained) << job_output(id) << Diagnostics();
    const std::vector<RankProcess> ranks = rank_processes(pids);
    ASSERT_EQ(ranks.size(), 4u) << job_output(id);
    const auto killed = Clock::now();
    for (const RankProcess& r : ranks)
      if (r.node == "n2") {
        EXPECT_EQ(kill(r.pid, frozen ? SIGSTOP : SIGKILL), 0) << "rank pid " << r.pid;
      }

    std::string state;
    auto ended = [&] {
      state = Client("scontrol show job " + id, 10).output;
      if (state.find("JobState=RUNNING") != std::string::npos ||
          state.find("JobState=COMPLETING") != std::string::npos)
        return false;
      for (const RankProcess& r : ranks)
        if (kill(r.pid, 0) == 0) return false;
      return true;
    };
    const bool over = wait_until(60, ended);
    const double seconds = std::chrono::duration<double>(Clock::now() - killed).count();
    const std::string out = job_output(id);
    std::cout << "[slurm] n2's ranks " << (frozen ? "stopped" : "killed") << ": the job ended "
              << seconds << " s later\n";
    ASSERT_TRUE(over) << "the job still runs 60 s after n2 died\n"
                      << state << "\n--- job output:\n"
                      << out << Diagnostics();
    EXPECT_LE(seconds, 30.0) << state << "\n--- job output:\n" << out;
    EXPECT_NE(state.find("JobState=FAILED"), std::string::npos) << state << out;
    EXPECT_EQ(state.find("ExitCode=0:0"), std::string::npos) << state << out;
    if (frozen) {
      EXPECT_NE(out.find("no update finished in 10 s (--stall-timeout)"), std::string::npos) << out;
    }

    // The last checkpoint is whole: inspect reads it and eval runs the model it holds.
    ProcessResult inspect =
        run_command(tls_dist_binary() + " inspect " + run + "/checkpoint_last.h5", 60);
    EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
    ProcessResult eval = run_command(
        tls_dist_binary() + " eval --checkpoint " + run + "/checkpoint_last.h5 --data " + valid,
        60);
    EXPECT_EQ(eval.exit_code, 0) << eval.output;
    EXPECT_TRUE(std::regex_search(eval.output, std::regex("bpc [0-9.]+"))) << eval.output;
  }
}

}  // namespace
}  // namespace tls::testing
