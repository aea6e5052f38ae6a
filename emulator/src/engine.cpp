// Execution model: the threads of a workgroup run as fibers (fiber.h) on one
// OS thread; a lane runs until it reaches a barrier, a wave operation or its
// end, then the scheduler decides what can proceed. Workgroups are
// independent (as on the GPU) and are spread over a few OS threads.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>

#include "engine.h"
#include "fiber.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RDNA_EMU_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#endif

namespace rdna_emu::detail {

thread_local const LaneCoordinates* current_lane __attribute__((tls_model("initial-exec"))) =
    nullptr;

void fatal(const char* format, ...) {
  // One write per report, so that ASan's own warnings from another worker
  // cannot land inside it.
  char message[8192];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof message, format, args);
  va_end(args);
  std::fprintf(stderr, "rdna_emulator: %s\n", message);
  std::fflush(stderr);
  std::abort();
}

namespace {

// Fibers run kernel code compiled at -O1/-O2 (bigger frames under ASan); the
// kernels keep their tiles in registers, i.e. a few KiB of stack per lane.
constexpr std::size_t kLaneStackBytes = 128 * 1024;

// ASan must be told about every stack switch, or it reports false positives
// on the fiber stacks (see sanitizer/common_interface_defs.h).
void asan_start_switch(void** fake_stack_save, const void* bottom, std::size_t size) {
#ifdef RDNA_EMU_ASAN
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}
void asan_finish_switch(void* fake_stack_save, const void** bottom_old, std::size_t* size_old) {
#ifdef RDNA_EMU_ASAN
  __sanitizer_finish_switch_fiber(fake_stack_save, bottom_old, size_old);
#else
  (void)fake_stack_save, (void)bottom_old, (void)size_old;
#endif
}

// A reused stack may keep ASan poison from the redzones of frames that never
// returned (each fiber's entry frame): clear it before a new fiber starts.
void asan_unpoison_stack(unsigned char* bottom, std::size_t size) {
#ifdef RDNA_EMU_ASAN
  __asan_unpoison_memory_region(bottom, size);
#else
  (void)bottom, (void)size;
#endif
}

// A fiber stack with an inaccessible guard page below it, so that a stack
// overflow faults immediately instead of corrupting a neighbour.
class FiberStack {
 public:
  FiberStack() {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    mapping_bytes_ = kLaneStackBytes + page;
    void* mapping = mmap(nullptr, mapping_bytes_, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) fatal("cannot map a %zu-byte fiber stack", mapping_bytes_);
    if (mprotect(mapping, page, PROT_NONE) != 0) fatal("cannot protect a fiber stack guard page");
    mapping_ = static_cast<unsigned char*>(mapping);
    usable_ = mapping_ + page;
  }
  FiberStack(const FiberStack&) = delete;
  FiberStack& operator=(const FiberStack&) = delete;
  ~FiberStack() { munmap(mapping_, mapping_bytes_); }
  unsigned char* bottom() const { return usable_; }

 private:
  unsigned char* mapping_ = nullptr;
  unsigned char* usable_ = nullptr;
  std::size_t mapping_bytes_ = 0;
};

enum class LaneState : std::uint8_t { Runnable, AtBarrier, AtWaveOp, Exited };

struct Lane {
  LaneCoordinates coordinates;
  std::uint32_t thread_id;  // linear id in the workgroup: x + y*bx + z*bx*by
  LaneState state;
  SourceSite barrier_site;
  WaveOpRequest* request;  // set while AtWaveOp
  void* stack_pointer;  // saved while the lane is suspended
  void* asan_fake_stack;
};

struct LdsAllocation {
  const void* type_tag;
  void* memory;
  std::size_t size;
};

// "0-15, 32-47" for a sorted list of ids.
std::string describe_ids(const std::vector<std::uint32_t>& ids) {
  std::string text;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!text.empty()) text += ", ";
    text += std::to_string(ids[i]);
    if (j > i) text += "-" + std::to_string(ids[j]);
    i = j + 1;
  }
  return text;
}

std::string describe_site(const SourceSite& site) {
  return std::string(site.file) + ":" + std::to_string(site.line);
}

// Runs workgroups one at a time on the calling OS thread.
// The order in which the scheduler resumes runnable threads. The GPU gives no
// order between waves, so a kernel that reads another thread's LDS write
// without a barrier in between sees poison or stale data in one of the two.
enum class ScheduleOrder : std::uint8_t { Forward, Reverse };

class WorkgroupRunner {
 public:
  explicit WorkgroupRunner(ScheduleOrder order) : order_(order) {}
  void run(const RegisteredKernel& kernel, const unsigned char* kernarg, Dim3 grid, Dim3 block,
           Dim3 block_idx);
  void suspend(Lane& lane);
  void* lds_storage(const void* type_tag, std::size_t size, std::size_t alignment,
                    const char* type_name);
  void arrive_at_wave_op(Lane& lane) { ++waves_arrived_[lane.thread_id / kWaveSize]; }
  const char* kernel_name() const { return kernel_->name.c_str(); }
  Dim3 block_idx() const { return block_idx_; }

  static void lane_entry();

 private:
  void prepare_lanes(Dim3 grid, Dim3 block, Dim3 block_idx);
  void resume(Lane& lane);
  bool complete_waves();
  bool release_barrier();
  [[noreturn]] void report_deadlock(const std::string& headline);
  std::string describe_lane_states() const;
  void free_lds();

  const ScheduleOrder order_;
  const RegisteredKernel* kernel_ = nullptr;
  const unsigned char* kernarg_ = nullptr;
  Dim3 block_idx_{};
  std::vector<Lane> lanes_;
  std::vector<std::unique_ptr<FiberStack>> stacks_;  // reused across workgroups
  std::vector<std::uint32_t> waves_arrived_;
  std::vector<LdsAllocation> lds_;
  std::size_t lds_bytes_ = 0;
  void* scheduler_stack_pointer_ = nullptr;
  void* scheduler_fake_stack_ = nullptr;
  const void* scheduler_stack_bottom_ = nullptr;
  std::size_t scheduler_stack_size_ = 0;
};

thread_local WorkgroupRunner* current_runner = nullptr;
thread_local Lane* running_lane = nullptr;

Lane& calling_lane(const char* operation) {
  if (running_lane == nullptr) fatal("%s called outside a kernel launch", operation);
  return *running_lane;
}

void WorkgroupRunner::prepare_lanes(Dim3 grid, Dim3 block, Dim3 block_idx) {
  const std::uint32_t threads = block.x * block.y * block.z;
  while (stacks_.size() < threads) stacks_.push_back(std::make_unique<FiberStack>());
  lanes_.assign(threads, Lane{});
  waves_arrived_.assign((threads + kWaveSize - 1) / kWaveSize, 0);
  for (std::uint32_t id = 0; id < threads; ++id) {
    Lane& lane = lanes_[id];
    lane.thread_id = id;
    lane.coordinates.thread_idx = {id % block.x, id / block.x % block.y, id / (block.x * block.y)};
    lane.coordinates.block_idx = block_idx;
    lane.coordinates.block_dim = block;
    lane.coordinates.grid_dim = grid;
    lane.coordinates.lane_id = id % kWaveSize;
    lane.state = LaneState::Runnable;
    asan_unpoison_stack(stacks_[id]->bottom(), kLaneStackBytes);
    lane.stack_pointer =
        prepare_fiber_stack(stacks_[id]->bottom(), kLaneStackBytes, &WorkgroupRunner::lane_entry);
  }
}

void WorkgroupRunner::lane_entry() {
  WorkgroupRunner& runner = *current_runner;
  asan_finish_switch(nullptr, &runner.scheduler_stack_bottom_, &runner.scheduler_stack_size_);
  runner.kernel_->invoker(runner.kernarg_);
  Lane& lane = *running_lane;
  lane.state = LaneState::Exited;
  asan_start_switch(nullptr, runner.scheduler_stack_bottom_, runner.scheduler_stack_size_);
  rdna_emu_switch_fiber(&lane.stack_pointer, runner.scheduler_stack_pointer_);
  fatal("an exited lane was resumed");  // the scheduler never resumes Exited lanes
}

void WorkgroupRunner::resume(Lane& lane) {
  running_lane = &lane;
  current_lane = &lane.coordinates;
  asan_start_switch(&scheduler_fake_stack_, stacks_[lane.thread_id]->bottom(), kLaneStackBytes);
  rdna_emu_switch_fiber(&scheduler_stack_pointer_, lane.stack_pointer);
  asan_finish_switch(scheduler_fake_stack_, nullptr, nullptr);
  running_lane = nullptr;
  current_lane = nullptr;
}

void WorkgroupRunner::suspend(Lane& lane) {
  asan_start_switch(&lane.asan_fake_stack, scheduler_stack_bottom_, scheduler_stack_size_);
  rdna_emu_switch_fiber(&lane.stack_pointer, scheduler_stack_pointer_);
  asan_finish_switch(lane.asan_fake_stack, &scheduler_stack_bottom_, &scheduler_stack_size_);
}

void WorkgroupRunner::run(const RegisteredKernel& kernel, const unsigned char* kernarg, Dim3 grid,
                          Dim3 block, Dim3 block_idx) {
  kernel_ = &kernel;
  kernarg_ = kernarg;
  block_idx_ = block_idx;
  prepare_lanes(grid, block, block_idx);
  current_runner = this;
  for (;;) {
    for (std::size_t i = 0; i < lanes_.size(); ++i) {
      Lane& lane = lanes_[order_ == ScheduleOrder::Forward ? i : lanes_.size() - 1 - i];
      if (lane.state == LaneState::Runnable) resume(lane);
    }
    // Every lane is now blocked or done.
    if (std::all_of(lanes_.begin(), lanes_.end(),
                    [](const Lane& lane) { return lane.state == LaneState::Exited; }))
      break;
    if (complete_waves() || release_barrier()) continue;
    report_deadlock("no thread can make progress");
  }
  current_runner = nullptr;
  free_lds();
}

// Executes the wave operation of every wave whose 32 lanes have all arrived.
bool WorkgroupRunner::complete_waves() {
  bool progressed = false;
  for (std::uint32_t wave = 0; wave < waves_arrived_.size(); ++wave) {
    const std::uint32_t first = wave * kWaveSize;
    const std::uint32_t lanes_in_wave =
        std::min<std::uint32_t>(kWaveSize, static_cast<std::uint32_t>(lanes_.size()) - first);
    if (waves_arrived_[wave] == 0 || waves_arrived_[wave] < lanes_in_wave) continue;
    if (lanes_in_wave < kWaveSize) {
      // The hardware runs the missing lanes as inactive: a WMMA or shuffle
      // would read undefined registers.
      fatal("kernel %s, workgroup (%u,%u,%u), wave %u: %s at %s in a partial wave of %u threads "
            "(workgroup size %zu is not a multiple of 32): wave operations need all 32 lanes",
            kernel_name(), block_idx_.x, block_idx_.y, block_idx_.z, wave,
            wave_op_name(lanes_[first].request->kind),
            describe_site(lanes_[first].request->site).c_str(), lanes_in_wave, lanes_.size());
    }
    WaveOpRequest* requests[kWaveSize];
    for (std::uint32_t l = 0; l < kWaveSize; ++l) {
      requests[l] = lanes_[first + l].request;
      const WaveOpRequest& head = *requests[0];
      if (requests[l]->kind != head.kind || requests[l]->site.line != head.site.line ||
          std::strcmp(requests[l]->site.file, head.site.file) != 0) {
        fatal("kernel %s, workgroup (%u,%u,%u), wave %u: lanes reached different wave operations: "
              "lane 0 at %s (%s), lane %u at %s (%s)",
              kernel_name(), block_idx_.x, block_idx_.y, block_idx_.z, wave,
              wave_op_name(head.kind), describe_site(head.site).c_str(), l,
              wave_op_name(requests[l]->kind), describe_site(requests[l]->site).c_str());
      }
    }
    execute_wave_op(WaveLocation{kernel_name(), block_idx_, wave}, requests);
    for (std::uint32_t l = 0; l < kWaveSize; ++l) {
      lanes_[first + l].state = LaneState::Runnable;
      lanes_[first + l].request = nullptr;
    }
    waves_arrived_[wave] = 0;
    progressed = true;
  }
  return progressed;
}

// Releases a barrier once every thread of the workgroup waits at the same one.
bool WorkgroupRunner::release_barrier() {
  const Lane& first = lanes_.front();
  bool all_waiting = true, same_site = true;
  for (const Lane& lane : lanes_) {
    if (lane.state != LaneState::AtBarrier) {
      all_waiting = false;
      break;
    }
    same_site = same_site && lane.barrier_site.line == first.barrier_site.line &&
                std::strcmp(lane.barrier_site.file, first.barrier_site.file) == 0;
  }
  if (!all_waiting) return false;
  if (!same_site) report_deadlock("threads wait at different __syncthreads() calls");
  for (Lane& lane : lanes_) lane.state = LaneState::Runnable;
  return true;
}

std::string WorkgroupRunner::describe_lane_states() const {
  std::map<std::string, std::vector<std::uint32_t>> groups;
  for (const Lane& lane : lanes_) {
    switch (lane.state) {
      case LaneState::Exited:
        groups["have exited"].push_back(lane.thread_id);
        break;
      case LaneState::AtBarrier:
        groups["wait at __syncthreads() " + describe_site(lane.barrier_site)].push_back(
            lane.thread_id);
        break;
      case LaneState::AtWaveOp:
        groups["wait at " + std::string(wave_op_name(lane.request->kind)) + " " +
               describe_site(lane.request->site)]
            .push_back(lane.thread_id);
        break;
      case LaneState::Runnable:
        groups["are runnable"].push_back(lane.thread_id);
        break;
    }
  }
  std::string text;
  for (const auto& [what, ids] : groups)
    text += "\n  threads " + describe_ids(ids) + " " + what;
  return text;
}

void WorkgroupRunner::report_deadlock(const std::string& headline) {
  fatal("deadlock in kernel %s, workgroup (%u,%u,%u) of %zu threads: %s (a barrier needs every "
        "thread of the workgroup, a wave operation all 32 lanes of the wave):%s",
        kernel_name(), block_idx_.x, block_idx_.y, block_idx_.z, lanes_.size(), headline.c_str(),
        describe_lane_states().c_str());
}

void* WorkgroupRunner::lds_storage(const void* type_tag, std::size_t size, std::size_t alignment,
                                   const char* type_name) {
  for (const LdsAllocation& allocation : lds_)
    if (allocation.type_tag == type_tag) return allocation.memory;
  if (lds_bytes_ + size > kMaxLdsBytesPerWorkgroup) {
    fatal("kernel %s: LDS objects of %zu bytes in total exceed the 64 KiB a gfx11 workgroup may "
          "allocate (adding %s)",
          kernel_name(), lds_bytes_ + size, type_name);
  }
  void* memory = nullptr;
  // Exactly `size` bytes: ASan flags the first byte past the object.
  if (posix_memalign(&memory, std::max<std::size_t>(alignment, 16), size) != 0)
    fatal("cannot allocate %zu bytes of LDS for %s", size, type_name);
  std::memset(memory, kLdsPoisonByte, size);
  lds_.push_back({type_tag, memory, size});
  lds_bytes_ += size;
  return memory;
}

void WorkgroupRunner::free_lds() {
  for (const LdsAllocation& allocation : lds_) std::free(allocation.memory);
  lds_.clear();
  lds_bytes_ = 0;
}

ScheduleOrder schedule_order() {
  const char* text = std::getenv("RDNA_EMULATOR_SCHEDULE");
  if (text == nullptr || std::strcmp(text, "forward") == 0) return ScheduleOrder::Forward;
  if (std::strcmp(text, "reverse") == 0) return ScheduleOrder::Reverse;
  fatal("RDNA_EMULATOR_SCHEDULE=%s: expected forward (thread 0 first) or reverse", text);
}

std::uint32_t worker_count(std::uint32_t workgroups) {
  unsigned wanted = std::min(2u, std::max(1u, std::thread::hardware_concurrency()));
  if (const char* text = std::getenv("RDNA_EMULATOR_THREADS")) {
    char* end = nullptr;
    const long parsed = std::strtol(text, &end, 10);
    if (end == text || *end != '\0' || parsed < 1 || parsed > 64)
      fatal("RDNA_EMULATOR_THREADS=%s: expected a thread count from 1 to 64", text);
    wanted = static_cast<unsigned>(parsed);
  }
  return std::min<std::uint32_t>(wanted, workgroups);
}

}  // namespace

void barrier(SourceSite site) {
  Lane& lane = calling_lane("__syncthreads()");
  lane.state = LaneState::AtBarrier;
  lane.barrier_site = site;
  current_runner->suspend(lane);
}

void wave_op(WaveOpRequest& request) {
  Lane& lane = calling_lane(wave_op_name(request.kind));
  lane.state = LaneState::AtWaveOp;
  lane.request = &request;
  current_runner->arrive_at_wave_op(lane);
  current_runner->suspend(lane);
}

void* workgroup_lds_storage(const void* type_tag, std::size_t size, std::size_t alignment,
                            const char* type_name) {
  calling_lane("workgroup_lds<T>()");
  return current_runner->lds_storage(type_tag, size, alignment, type_name);
}

void run_kernel(const RegisteredKernel& kernel, const unsigned char* kernarg, Dim3 grid,
                Dim3 block) {
  const std::uint64_t workgroups = std::uint64_t{grid.x} * grid.y * grid.z;
  std::atomic<std::uint64_t> next_workgroup{0};
  const ScheduleOrder order = schedule_order();
  auto work = [&] {
    WorkgroupRunner runner(order);
    for (std::uint64_t index = next_workgroup++; index < workgroups; index = next_workgroup++) {
      const Dim3 block_idx{static_cast<std::uint32_t>(index % grid.x),
                           static_cast<std::uint32_t>(index / grid.x % grid.y),
                           static_cast<std::uint32_t>(index / (std::uint64_t{grid.x} * grid.y))};
      runner.run(kernel, kernarg, grid, block, block_idx);
    }
  };
  const std::uint32_t workers =
      worker_count(static_cast<std::uint32_t>(std::min<std::uint64_t>(workgroups, 64)));
  std::vector<std::thread> helpers;
  for (std::uint32_t i = 1; i < workers; ++i) helpers.emplace_back(work);
  work();
  for (std::thread& helper : helpers) helper.join();
}

}  // namespace rdna_emu::detail
