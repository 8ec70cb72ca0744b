// `make bench-peers`: the WORKLOAD.md get-hit and set-update cells on two shared
// stores that other projects use, so that `make bench` can set them beside
// ShmLRU's figures measured on the same machine:
//   boost-interprocess: boost::unordered_map<uint32_t, record> in a
//     managed_shared_memory segment, every operation under an interprocess_mutex;
//   lmdb: an LMDB environment on /dev/shm (reads in a reused read-only
//     transaction per get, writes in a write transaction per set, MDB_NOSYNC).
// Usage: peers STORE CAPACITY OPS RUNS >> bench-peers.json (one JSON object a line).
// Not part of the Swift package (excluded from ShmLRUBench in Package.swift).
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <boost/unordered_map.hpp>
#include <lmdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

namespace bip = boost::interprocess;

static uint32_t fmix32(uint32_t h) {
    h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16;
    return h;
}
static uint32_t key_of(uint64_t i) { return fmix32(uint32_t(i) ^ 0x9e3779b9u); }
static uint64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}
struct SplitMix64 {
    uint64_t s;
    uint64_t next() {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};
struct Value { unsigned char bytes[200]; };
static void stamp(Value &v, uint64_t version, uint32_t key) {
    for (int i = 0; i < 200; i++) v.bytes[i] = (unsigned char)(i * 7 + 3);
    memcpy(v.bytes, &version, 8);
    memcpy(v.bytes + 8, &key, 4);
}
struct Record { unsigned char bytes[250]; };  // 250 bytes of payload per record

// One store's operations (after fork, each process opens its own handle).
struct Store {
    virtual ~Store() {}
    virtual bool get(uint32_t key, Value &out) = 0;
    virtual bool update(uint32_t key, const Value &v) = 0;
};

// --- Boost.Interprocess
typedef bip::allocator<std::pair<const uint32_t, Record>, bip::managed_shared_memory::segment_manager> BoostAlloc;
typedef boost::unordered_map<uint32_t, Record, boost::hash<uint32_t>, std::equal_to<uint32_t>, BoostAlloc> BoostMap;
static const char *boost_name = "shmlru-bench-peer-boost";

struct BoostStore : Store {
    bip::managed_shared_memory segment;
    BoostMap *map;
    bip::interprocess_mutex *mutex;
    BoostStore(bool create, size_t capacity)
        : segment(create ? bip::managed_shared_memory(bip::create_only, boost_name, capacity * 420 + (64 << 20))
                         : bip::managed_shared_memory(bip::open_only, boost_name)) {
        if (create) {
            mutex = segment.construct<bip::interprocess_mutex>("mutex")();
            map = segment.construct<BoostMap>("map")(capacity, boost::hash<uint32_t>(), std::equal_to<uint32_t>(),
                                                    segment.get_allocator<std::pair<const uint32_t, Record>>());
        } else {
            mutex = segment.find<bip::interprocess_mutex>("mutex").first;
            map = segment.find<BoostMap>("map").first;
        }
    }
    bool get(uint32_t key, Value &out) override {
        bip::scoped_lock<bip::interprocess_mutex> lock(*mutex);
        auto it = map->find(key);
        if (it == map->end()) return false;
        memcpy(out.bytes, it->second.bytes, 200);
        return true;
    }
    bool update(uint32_t key, const Value &v) override {
        bip::scoped_lock<bip::interprocess_mutex> lock(*mutex);
        auto it = map->find(key);
        if (it == map->end()) return false;
        memcpy(it->second.bytes, v.bytes, 200);
        return true;
    }
    void insert(uint32_t key, const Value &v) {
        Record r;
        memset(r.bytes, 0, sizeof r.bytes);
        memcpy(r.bytes, v.bytes, 200);
        map->emplace(key, r);
    }
};

// --- LMDB
static std::string lmdb_dir() { return "/dev/shm/shmlru-bench-peer-lmdb-" + std::to_string(getpid()); }
static std::string lmdb_path;

struct LmdbStore : Store {
    MDB_env *env = nullptr;
    MDB_dbi dbi = 0;
    MDB_txn *read = nullptr;
    explicit LmdbStore(size_t capacity) {
        if (mdb_env_create(&env) || mdb_env_set_mapsize(env, capacity * 600 + (256 << 20)) ||
            mdb_env_open(env, lmdb_path.c_str(), MDB_NOSYNC | MDB_NOMETASYNC | MDB_NOTLS, 0600)) {
            fprintf(stderr, "lmdb: cannot open %s\n", lmdb_path.c_str());
            exit(1);
        }
        MDB_txn *txn;
        mdb_txn_begin(env, nullptr, 0, &txn);
        mdb_dbi_open(txn, nullptr, MDB_INTEGERKEY, &dbi);
        mdb_txn_commit(txn);
        mdb_txn_begin(env, nullptr, MDB_RDONLY, &read);
        mdb_txn_reset(read);
    }
    ~LmdbStore() override {
        if (read) mdb_txn_abort(read);
        mdb_env_close(env);
    }
    bool get(uint32_t key, Value &out) override {
        mdb_txn_renew(read);
        MDB_val k{sizeof key, &key}, v;
        bool ok = mdb_get(read, dbi, &k, &v) == 0 && v.mv_size >= 200;
        if (ok) memcpy(out.bytes, v.mv_data, 200);
        mdb_txn_reset(read);
        return ok;
    }
    bool update(uint32_t key, const Value &value) override {
        MDB_txn *txn;
        if (mdb_txn_begin(env, nullptr, 0, &txn)) return false;
        MDB_val k{sizeof key, &key}, v{250, nullptr};
        Record r;
        memset(r.bytes, 0, sizeof r.bytes);
        memcpy(r.bytes, value.bytes, 200);
        v.mv_data = r.bytes;
        bool ok = mdb_put(txn, dbi, &k, &v, 0) == 0;
        return mdb_txn_commit(txn) == 0 && ok;
    }
    void preload(size_t capacity) {
        MDB_txn *txn;
        mdb_txn_begin(env, nullptr, 0, &txn);
        Value value;
        for (size_t i = 0; i < capacity; i++) {
            uint32_t key = key_of(i);
            stamp(value, 0, key);
            Record r;
            memset(r.bytes, 0, sizeof r.bytes);
            memcpy(r.bytes, value.bytes, 200);
            MDB_val k{sizeof key, &key}, v{250, r.bytes};
            mdb_put(txn, dbi, &k, &v, 0);
        }
        mdb_txn_commit(txn);
    }
};

// --- the timed loops
struct Result { uint64_t start, end, ops, errors; };

static Result run_loop(Store &store, bool update, size_t capacity, uint64_t ops, uint64_t seed) {
    std::vector<uint32_t> keys(ops);
    SplitMix64 rng{seed};
    for (auto &k : keys) k = key_of(rng.next() % capacity);
    Value value, out;
    uint64_t errors = 0, version = seed << 20;
    Result r{now_ns(), 0, ops, 0};
    for (uint64_t i = 0; i < ops; i++) {
        uint32_t key = keys[i];
        if (update) {
            stamp(value, ++version, key);
            if (!store.update(key, value)) errors++;
        } else {
            uint32_t seen = 0;
            if (!store.get(key, out)) errors++;
            else {
                memcpy(&seen, out.bytes + 8, 4);
                if (seen != key) errors++;
            }
        }
    }
    r.end = now_ns();
    r.errors = errors;
    return r;
}

static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: peers boost-interprocess|lmdb CAPACITY OPS RUNS\n");
        return 2;
    }
    std::string kind = argv[1];
    size_t capacity = strtoull(argv[2], nullptr, 10);
    uint64_t ops = strtoull(argv[3], nullptr, 10);
    int runs = atoi(argv[4]);
    bool boost = kind == "boost-interprocess";
    if (!boost && kind != "lmdb") return 2;

    std::function<Store *()> open;
    BoostStore *creator = nullptr;
    LmdbStore *lmdbCreator = nullptr;
    if (boost) {
        bip::shared_memory_object::remove(boost_name);
        creator = new BoostStore(true, capacity);
        Value value;
        for (size_t i = 0; i < capacity; i++) {
            stamp(value, 0, key_of(i));
            creator->insert(key_of(i), value);
        }
        open = [&] { return (Store *)new BoostStore(false, capacity); };
    } else {
        lmdb_path = lmdb_dir();
        std::string mk = "mkdir -p " + lmdb_path;
        if (system(mk.c_str()) != 0) return 1;
        lmdbCreator = new LmdbStore(capacity);
        lmdbCreator->preload(capacity);
        delete lmdbCreator;  // each process opens its own environment (LMDB forbids sharing one across fork)
        open = [&] { return (Store *)new LmdbStore(capacity); };
    }

    int status = 0;
    for (int w = 0; w < 2; w++) {
        bool update = w == 1;
        const char *workload = update ? "set-update" : "get-hit";
        // One process: a warm-up, then RUNS runs.
        std::vector<double> single;
        {
            Store *s = open();
            run_loop(*s, update, capacity, std::min<uint64_t>(ops, 200000), 7);
            for (int r = 0; r < runs; r++) {
                Result res = run_loop(*s, update, capacity, ops, 100 + r);
                if (res.errors) { fprintf(stderr, "%s %s: %llu wrong values\n", kind.c_str(), workload, (unsigned long long)res.errors); status = 1; }
                single.push_back(double(res.end - res.start) / double(res.ops));
            }
            delete s;
        }
        // Two processes, released together through a pipe.
        std::vector<double> two;
        for (int r = 0; r < runs; r++) {
            int go[2], back[2];
            if (pipe(go) || pipe(back)) return 1;
            pid_t pids[2];
            for (int p = 0; p < 2; p++) {
                pids[p] = fork();
                if (pids[p] == 0) {
                    close(go[1]);
                    close(back[0]);
                    Store *s = open();
                    char c;
                    if (read(go[0], &c, 1) != 1) _exit(1);
                    Result res = run_loop(*s, update, capacity, ops, 1000 + 2 * r + p);
                    if (write(back[1], &res, sizeof res) != sizeof res) _exit(1);
                    delete s;
                    _exit(res.errors ? 1 : 0);
                }
            }
            close(go[0]);
            close(back[1]);
            usleep(200000);  // both opened their handles and generated their streams
            if (write(go[1], "gg", 2) != 2) return 1;
            close(go[1]);
            Result res[2];
            for (int p = 0; p < 2; p++)
                if (read(back[0], &res[p], sizeof res[p]) != sizeof res[p]) return 1;
            close(back[0]);
            for (int p = 0; p < 2; p++) {
                int st = 0;
                waitpid(pids[p], &st, 0);
                if (st != 0) status = 1;
            }
            uint64_t first = std::min(res[0].start, res[1].start), last = std::max(res[0].end, res[1].end);
            two.push_back(double(res[0].ops + res[1].ops) / (double(last - first) / 1e9));
        }
        printf("{\"store\":\"%s\",\"workload\":\"%s\",\"capacity\":%zu,\"processes\":1,\"unit\":\"ns/op\",\"median\":%.2f,\"min\":%.2f,\"max\":%.2f}\n",
               kind.c_str(), workload, capacity, median(single), *std::min_element(single.begin(), single.end()),
               *std::max_element(single.begin(), single.end()));
        printf("{\"store\":\"%s\",\"workload\":\"%s\",\"capacity\":%zu,\"processes\":2,\"unit\":\"ops/s\",\"median\":%.0f,\"min\":%.0f,\"max\":%.0f}\n",
               kind.c_str(), workload, capacity, median(two), *std::min_element(two.begin(), two.end()),
               *std::max_element(two.begin(), two.end()));
        fflush(stdout);
    }
    if (boost) {
        delete creator;
        bip::shared_memory_object::remove(boost_name);
    } else {
        std::string rm = "rm -rf " + lmdb_path;
        if (system(rm.c_str()) != 0) status = 1;
    }
    return status;
}
